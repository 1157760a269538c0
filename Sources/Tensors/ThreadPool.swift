import CDNNL
import CKernels
import COpenBLAS
import Foundation

/// The kernels' threads: by default as many as physical cores (`REELQL_THREADS` overrides). Work
/// runs on OpenMP's team (libgomp, the runtime Debian's oneDNN uses), split into one contiguous
/// chunk per thread; the team's threads stay warm between calls, so short kernels pay no wake-up.
public final class ThreadPool: @unchecked Sendable {
    /// The process's pool. OpenBLAS and oneDNN (OpenMP) are set to the same number of threads,
    /// so that every kernel runs on one team the size of the machine.
    public static let shared: ThreadPool = {
        let pool = ThreadPool(threads: defaultThreads)
        openblas_set_num_threads(Int32(clamping: pool.threads))
        omp_set_num_threads(Int32(clamping: pool.threads))
        return pool
    }()

    public let threads: Int

    /// Most threads a pool takes (and `REELQL_THREADS` may ask for).
    public static let threadLimit = 1024

    public init(threads: Int) { self.threads = min(max(1, threads), Self.threadLimit) }

    /// Physical cores, or `REELQL_THREADS` when it holds a count in 1…threadLimit (the program
    /// refuses to start with any other value: see `environmentProblem`).
    public static var defaultThreads: Int { requestedThreads ?? physicalCores }

    static var variable: String? { ProcessInfo.processInfo.environment["REELQL_THREADS"] }

    /// `REELQL_THREADS` when it is a count in 1…threadLimit.
    static var requestedThreads: Int? { variable.flatMap { Int($0) }.flatMap { (1...threadLimit).contains($0) ? $0 : nil } }

    /// Why `REELQL_THREADS` cannot be used, if it is set and cannot.
    public static var environmentProblem: String? {
        guard let s = variable, requestedThreads == nil else { return nil }
        return "REELQL_THREADS=\(s.debugDescription): must be a whole number of threads from 1 to \(threadLimit)"
    }

    /// Distinct (package, core) pairs in /sys, else the active processor count.
    public static let physicalCores: Int = {
        var cores = Set<String>()
        let fm = FileManager.default
        let base = "/sys/devices/system/cpu"
        if let items = try? fm.contentsOfDirectory(atPath: base) {
            for cpu in items where cpu.hasPrefix("cpu") && Int(cpu.dropFirst(3)) != nil {
                let topo = "\(base)/\(cpu)/topology"
                if let core = try? String(contentsOfFile: "\(topo)/core_id", encoding: .utf8),
                   let pkg = try? String(contentsOfFile: "\(topo)/physical_package_id", encoding: .utf8) {
                    cores.insert(pkg.trimmingCharacters(in: .whitespacesAndNewlines) + "/" + core.trimmingCharacters(in: .whitespacesAndNewlines))
                }
            }
        }
        let online = ProcessInfo.processInfo.activeProcessorCount
        return cores.isEmpty ? online : min(cores.count, online)
    }()

    /// Calls `body` on disjoint ranges covering 0..<count, in parallel; a range holds at least
    /// `grain` items (so small jobs stay on one thread).
    public func parallelRanges(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threads, max(1, count / max(1, grain)))
        if chunks == 1 { body(0..<count); return }
        // On OpenMP's team — the threads oneDNN runs on — so that our element-wise work and
        // oneDNN's products never compete for the cores with a second set of threads.
        // A kernel level forced on this thread (tests) holds on the team's threads for this job.
        let forced = rq_forced_cpu_level()
        withoutActuallyEscaping(body) { body in
            var work: (Range<Int>) -> Void = forced < 0 ? body : { range in
                let previous = rq_forced_cpu_level()
                _ = rq_set_cpu_level(forced)
                body(range)
                _ = rq_set_cpu_level(previous)
            }
            withUnsafeMutablePointer(to: &work) { context in
                reelql_parallel(count, UInt32(chunks), { context, begin, end in
                    let body = context!.assumingMemoryBound(to: ((Range<Int>) -> Void).self).pointee
                    body(Int(begin)..<Int(end))
                }, UnsafeMutableRawPointer(context))
            }
        }
    }

    /// Calls `body(i)` for every i in 0..<count, spread over the threads.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        parallelRanges(count) { r in for i in r { body(i) } }
    }
}

import CDNNL
import CKernels
import Foundation

/// bf16 weights reordered into oneDNN's blocked matmul layout (owned memory).
public final class PackedWeight: @unchecked Sendable {
    let desc: dnnl_memory_desc_t
    let bytes: UnsafeMutableRawPointer
    public let size: Int
    let key: String
    init(desc: dnnl_memory_desc_t, bytes: UnsafeMutableRawPointer, size: Int, key: String) {
        self.desc = desc
        self.bytes = bytes
        self.size = size
        self.key = key
    }
    deinit { free(bytes) }
}

/// oneDNN matrix products. Primitives are created once per shape and layout and cached.
final class OneDNN: @unchecked Sendable {
    static let shared = OneDNN()

    private var engine: dnnl_engine_t?
    private var stream: dnnl_stream_t?
    private var cache: [String: dnnl_primitive_t] = [:]
    private let lock = NSLock()

    /// Whether oneDNN has bf16 matrix products on this CPU. oneDNN 2.x (Debian 12's) has them
    /// only with AVX-512; elsewhere (AVX2 servers) `Linear` and `Attention` widen bf16 products
    /// to f32. `REELQL_NO_ONEDNN_BF16=1` takes the widened path anywhere (tests, comparisons).
    private(set) var bf16Products = false
    /// Whether oneDNN's u8 × s8 → s32 products are exact here: with AVX-512 VNNI (without it,
    /// oneDNN's int8 kernels may saturate 16-bit intermediate sums). Elsewhere `Linear` uses its own
    /// int8 kernels for every row count. `REELQL_NO_ONEDNN_INT8=1` does so anywhere.
    private(set) var int8Products = false

    private init() {
        _ = ThreadPool.shared // sizes OpenMP's team before oneDNN starts it
        dnnl_engine_create(&engine, dnnl_cpu, 0)
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue)
        if ProcessInfo.processInfo.environment["REELQL_NO_ONEDNN_BF16"] != "1" {
            bf16Products = probe { p in
                try matmul(src: .init(dims: [2, 2], strides: [2, 1], type: dnnl_bf16, pointer: p),
                           weights: .init(dims: [2, 2], strides: [1, 2], type: dnnl_bf16, pointer: p + 16),
                           dst: .init(dims: [2, 2], strides: [2, 1], type: dnnl_f32, pointer: p + 32))
                return true
            }
        }
        if ProcessInfo.processInfo.environment["REELQL_NO_ONEDNN_INT8"] != "1", rq_has_vnni() != 0 {
            // Extreme bytes over 64 columns: a kernel without VNNI (oneDNN capped below it, say by
            // ONEDNN_MAX_CPU_ISA) saturates 255·127 + 255·127 in 16 bits and fails this.
            int8Products = probe { p in
                p.initializeMemory(as: UInt8.self, repeating: 255, count: 128)     // src u8 [2, 64]
                (p + 128).initializeMemory(as: Int8.self, repeating: 127, count: 128) // weights s8 [64, 2]
                try matmul(src: .init(dims: [2, 64], strides: [64, 1], type: dnnl_u8, pointer: p),
                           weights: .init(dims: [64, 2], strides: [1, 64], type: dnnl_s8, pointer: p + 128),
                           dst: .init(dims: [2, 2], strides: [2, 1], type: dnnl_s32, pointer: p + 256))
                return (0..<4).allSatisfy { p.load(fromByteOffset: 256 + 4 * $0, as: Int32.self) == 64 * 255 * 127 }
            }
        }
    }

    /// Runs a tiny product on 512 bytes (ones, unless the body writes its own operands): whether
    /// oneDNN has (and gets right) a kind of product.
    private func probe(_ body: (UnsafeMutableRawPointer) throws -> Bool) -> Bool {
        let p = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 64)
        defer { p.deallocate() }
        p.initializeMemory(as: UInt8.self, repeating: 1, count: 512)
        return (try? body(p)) ?? false
    }

    /// A matrix operand: logical dims, strides in elements, element type, memory — or a
    /// ready-made (blocked) descriptor with a key that names it.
    struct Operand {
        var dims: [Int]
        var strides: [Int]
        var type: dnnl_data_type_t
        var pointer: UnsafeMutableRawPointer
        var packed: (desc: dnnl_memory_desc_t, key: String)? = nil

        init(dims: [Int], strides: [Int], type: dnnl_data_type_t, pointer: UnsafeMutableRawPointer) {
            self.dims = dims
            self.strides = strides
            self.type = type
            self.pointer = pointer
        }

        init(packed desc: dnnl_memory_desc_t, key: String, pointer: UnsafeMutableRawPointer) {
            dims = []
            strides = []
            type = dnnl_bf16
            self.pointer = pointer
            packed = (desc, key)
        }

        var key: String { packed?.key ?? "\(dims)/\(strides)/\(type.rawValue)" }

        func descriptor() throws -> dnnl_memory_desc_t {
            if let packed { return packed.desc }
            var md = dnnl_memory_desc_t()
            var d = dims.map { dnnl_dim_t($0) }
            var s = strides.map { dnnl_dim_t($0) }
            let status = dnnl_memory_desc_init_by_strides(&md, Int32(dims.count), &d, type, &s)
            guard status == dnnl_success else { throw OneDNN.failure("memory descriptor \(dims) strides \(strides)", status) }
            return md
        }
    }

    static func failure(_ what: String, _ status: dnnl_status_t) -> TensorError {
        .backend(operation: "oneDNN \(what)", reason: "status \(status.rawValue)")
    }

    /// Reorders weights W [n, k] (row-major, as nn.Linear stores them; bf16, or s8 for u8 × s8
    /// products) into the blocked layout oneDNN's matmul prefers for `rows`-row products.
    /// Returns the layout and the bytes.
    func pack(weights: UnsafeRawPointer, type: dnnl_data_type_t, k: Int, n: Int, rows: Int) throws -> (desc: dnnl_memory_desc_t, bytes: UnsafeMutableRawPointer, size: Int) {
        let int8 = type == dnnl_s8
        var s = try Operand(dims: [rows, k], strides: [k, 1], type: int8 ? dnnl_u8 : type, pointer: UnsafeMutableRawPointer(mutating: weights)).descriptor()
        var d = try Operand(dims: [rows, n], strides: [n, 1], type: int8 ? dnnl_s32 : dnnl_f32, pointer: UnsafeMutableRawPointer(mutating: weights)).descriptor()
        var any = dnnl_memory_desc_t()
        var wdims: [dnnl_dim_t] = [dnnl_dim_t(k), dnnl_dim_t(n)]
        var status = dnnl_memory_desc_init_by_tag(&any, 2, &wdims, type, dnnl_format_tag_any)
        guard status == dnnl_success else { throw OneDNN.failure("packing descriptor", status) }
        var desc = dnnl_matmul_desc_t()
        status = dnnl_matmul_desc_init(&desc, &s, &any, nil, &d)
        guard status == dnnl_success else { throw OneDNN.failure("packing matmul", status) }
        var pd: dnnl_primitive_desc_t? = nil
        status = dnnl_primitive_desc_create(&pd, &desc, nil, engine, nil)
        guard status == dnnl_success else { throw OneDNN.failure("packing matmul", status) }
        defer { dnnl_primitive_desc_destroy(pd) }
        guard let md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0) else {
            throw TensorError.backend(operation: "oneDNN packing", reason: "no weights layout")
        }
        var packedDesc = md.pointee
        let size = dnnl_memory_desc_get_size(&packedDesc)
        var raw: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&raw, 64, max(64, size)) == 0, let bytes = raw else { throw TensorError.backend(operation: "packing", reason: "out of memory") }
        var plain = try Operand(dims: [k, n], strides: [1, k], type: type, pointer: UnsafeMutableRawPointer(mutating: weights)).descriptor()
        var rpd: dnnl_primitive_desc_t? = nil
        status = dnnl_reorder_primitive_desc_create(&rpd, &plain, engine, &packedDesc, engine, nil)
        guard status == dnnl_success else { free(bytes); throw OneDNN.failure("reorder", status) }
        defer { dnnl_primitive_desc_destroy(rpd) }
        var reorder: dnnl_primitive_t? = nil
        dnnl_primitive_create(&reorder, rpd)
        defer { dnnl_primitive_destroy(reorder) }
        var from: dnnl_memory_t? = nil, to: dnnl_memory_t? = nil
        dnnl_memory_create(&from, &plain, engine, UnsafeMutableRawPointer(mutating: weights))
        dnnl_memory_create(&to, &packedDesc, engine, bytes)
        defer { dnnl_memory_destroy(from); dnnl_memory_destroy(to) }
        var args = [dnnl_exec_arg_t(arg: reelql_dnnl_arg_from(), memory: from), dnnl_exec_arg_t(arg: reelql_dnnl_arg_to(), memory: to)]
        status = lock.withLock {
            let s = dnnl_primitive_execute(reorder, stream, 2, &args)
            dnnl_stream_wait(stream)
            return s
        }
        guard status == dnnl_success else { free(bytes); throw OneDNN.failure("reorder execution", status) }
        return (packedDesc, bytes, size)
    }

    /// dst = src · weights over the last two dimensions (leading dimensions broadcast as batches).
    func matmul(src: Operand, weights: Operand, dst: Operand) throws {
        let key = src.key + "|" + weights.key + "|" + dst.key
        var sm = try src.descriptor(), wm = try weights.descriptor(), dm = try dst.descriptor()
        // One lock over the cache and the execution: a full cache is emptied (its primitives
        // destroyed) only while no other thread holds one of them. One stream: executions are
        // serialised anyway (oneDNN threads each one internally).
        let status = try lock.withLock { () throws -> dnnl_status_t in
            let primitive: dnnl_primitive_t
            if let p = cache[key] {
                primitive = p
            } else {
                var desc = dnnl_matmul_desc_t()
                var status = dnnl_matmul_desc_init(&desc, &sm, &wm, nil, &dm)
                guard status == dnnl_success else { throw OneDNN.failure("matmul \(src.dims)·\(weights.dims)", status) }
                var pd: dnnl_primitive_desc_t? = nil
                status = dnnl_primitive_desc_create(&pd, &desc, nil, engine, nil)
                guard status == dnnl_success else { throw OneDNN.failure("matmul \(src.dims)·\(weights.dims)", status) }
                defer { dnnl_primitive_desc_destroy(pd) }
                var p: dnnl_primitive_t? = nil
                status = dnnl_primitive_create(&p, pd)
                guard status == dnnl_success, let p else { throw OneDNN.failure("matmul primitive", status) }
                if cache.count > 512 { for v in cache.values { dnnl_primitive_destroy(v) }; cache.removeAll() }
                cache[key] = p
                primitive = p
            }
            var ms: dnnl_memory_t? = nil, mw: dnnl_memory_t? = nil, md: dnnl_memory_t? = nil
            dnnl_memory_create(&ms, &sm, engine, src.pointer)
            dnnl_memory_create(&mw, &wm, engine, weights.pointer)
            dnnl_memory_create(&md, &dm, engine, dst.pointer)
            defer { dnnl_memory_destroy(ms); dnnl_memory_destroy(mw); dnnl_memory_destroy(md) }
            var args = [dnnl_exec_arg_t(arg: reelql_dnnl_arg_src(), memory: ms),
                        dnnl_exec_arg_t(arg: reelql_dnnl_arg_weights(), memory: mw),
                        dnnl_exec_arg_t(arg: reelql_dnnl_arg_dst(), memory: md)]
            let s = dnnl_primitive_execute(primitive, stream, 3, &args)
            dnnl_stream_wait(stream)
            return s
        }
        guard status == dnnl_success else { throw OneDNN.failure("matmul execution", status) }
    }
}

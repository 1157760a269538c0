import CDNNL
import CKernels
import COpenBLAS
import Foundation

/// Matrix products with checkpoint weights laid out as PyTorch's nn.Linear stores them
/// (W [out, in]): y [M, N] = x [M, K] · Wᵀ (+ bias).
///
/// f32 weights go to OpenBLAS. bf16 weights stay bf16 and the activations are rounded to bf16
/// (as PyTorch computes a bf16 model), with f32 accumulation: few rows (decoding) use the bf16
/// GEMV kernels, which read each weight once per step; many rows (prefill, vision) use oneDNN
/// where it has bf16 products (AVX-512), else OpenBLAS on the same bf16 values widened to f32.
///
/// int8 weights (`quantize`: symmetric, one scale per output row) multiply activations quantized
/// per row (symmetric, one scale per row) with integer sums: few rows through reelql's VNNI GEMV
/// kernels, many rows through reelql's VNNI GEMM on weights packed for it (else oneDNN's u8 × s8
/// → s32 GEMM); the sums are exact, so every path gives every row the same value, and a row never
/// depends on the others.
public enum Linear {
    /// bf16 and f16 products of at most this many rows use the GEMV kernels rather than a GEMM
    /// (int8 ones: `int8Kernel`).
    public static let gemvRows = 8

    public static func forward(_ x: Tensor, _ w: WeightTensor, bias: Tensor? = nil,
                               pool: ThreadPool = .shared) throws -> Tensor {
        let m = x.count / max(1, x.shape.last ?? 1)
        let y = try Tensor(zeros: Array(x.shape.dropLast()) + [w.shape[0]], what: "linear output")
        try forward(x, w, bias: bias, into: y, rows: m, pool: pool)
        return y
    }

    /// Work on finished rows of a product's output, in place (`Linear.forward`'s `then`): called
    /// with disjoint ranges of rows, possibly on several threads at once. It must read and write
    /// only the rows of its range: others may still hold a product's raw integer sums.
    public typealias RowEpilogue = (Range<Int>) -> Void

    /// Writes x · Wᵀ (+ bias) into `y` ([rows, N], contiguous). `rowwise`: each row's result is
    /// exactly what a one-row product gives (batched decoding: a sequence's tokens do not depend
    /// on the batch it shares a step with), whatever the row count. `then` runs on every row of
    /// the result once it is final: on the int8 GEMMs block by block, right after each block's
    /// epilogue while its rows are in cache (the tower's rotary embedding: one pass over
    /// the output from memory fewer), elsewhere over all rows after the product. A row's values
    /// are the same either way.
    public static func forward(_ x: Tensor, _ w: WeightTensor, bias: Tensor? = nil, into y: Tensor,
                               rows m: Int, rowwise: Bool = false, then epilogue: RowEpilogue? = nil,
                               pool: ThreadPool = .shared) throws {
        guard w.shape.count == 2 else { throw TensorError.shapeMismatch(operation: "linear \(w.name)", expected: "[out, in]", got: "\(w.shape)") }
        let n = w.shape[0], k = w.shape[1]
        guard x.count == m * k else { throw TensorError.shapeMismatch(operation: "linear \(w.name)", expected: "[\(m), \(k)]", got: "\(x.shape)") }
        guard y.count == m * n else { throw TensorError.shapeMismatch(operation: "linear \(w.name) output", expected: "[\(m), \(n)]", got: "\(y.shape)") }
        if let bias, bias.count != n { throw TensorError.shapeMismatch(operation: "linear \(w.name) bias", expected: "[\(n)]", got: "\(bias.shape)") }
        switch w.dtype {
        case .f32 where rowwise:
            // One product per row: what a one-row call computes (OpenBLAS's order depends on m).
            for r in 0..<m {
                sgemm(m: 1, n: n, k: k, a: x.pointer + r * k, b: w.pointer.assumingMemoryBound(to: Float.self), c: y.pointer + r * n)
            }
        case .f32:
            sgemm(m: m, n: n, k: k, a: x.pointer, b: w.pointer.assumingMemoryBound(to: Float.self), c: y.pointer)
        case .bf16 where m <= gemvRows || rowwise:
            // The GEMV kernels give each row the arithmetic of a one-row product, for any row count.
            try gemvBF16(x: x.pointer, batch: m, w: w.pointer.assumingMemoryBound(to: UInt16.self), rows: n, cols: k, y: y.pointer, pool: pool)
        case .bf16:
            try gemmBF16(x: x.pointer, m: m, k: k, w: w, n: n, y: y.pointer, pool: pool)
        case .f16 where m <= gemvRows || rowwise:
            let wp = w.pointer.assumingMemoryBound(to: UInt16.self)
            for b in 0..<m {
                let xb = x.pointer + b * k, yb = y.pointer + b * n
                pool.parallelRanges(n, grain: 64) { r in rq_gemv_f16(wp, xb, yb, k, r.lowerBound, r.upperBound) }
            }
        case .i8:
            // Every int8 path gives each row the same bits (exact integer sums, one epilogue), so
            // `rowwise` needs nothing here: the row count alone picks the faster kernel.
            return try forwardInt8(x, w, bias: bias, into: y, rows: m, kernel: int8Kernel(rows: m, columns: k, packed: w.vnni != nil),
                                   then: epilogue, pool: pool)
        case .f16:
            // No f16 matmul on this CPU class: widen the weight for this product.
            let wide = try w.toF32()
            sgemm(m: m, n: n, k: k, a: x.pointer, b: wide.pointer, c: y.pointer)
        default:
            throw TensorError.unsupportedDType(operation: "linear \(w.name)", dtype: w.dtype.rawValue)
        }
        finish(y, rows: m, bias: bias, then: epilogue, pool: pool)
    }

    /// y [m, n] += bias, then `epilogue` over all rows: what follows a product that has neither
    /// in its own epilogue.
    static func finish(_ y: Tensor, rows m: Int, bias: Tensor?, then epilogue: RowEpilogue?, pool: ThreadPool) {
        if let bias {
            let n = bias.count
            pool.parallelRanges(m, grain: 16) { r in rq_add_bias(y.pointer + r.lowerBound * n, bias.pointer, r.count, n) }
        }
        if let epilogue { pool.parallelRanges(m, grain: 8, epilogue) }
    }

    /// The weight with a copy for products of many rows (`rows` is a typical row count): bf16 in
    /// oneDNN's blocked layout, int8 as `packInt8` packs it. Products of few rows still read the
    /// original. Other dtypes are returned as they are.
    public static func pack(_ w: WeightTensor, rows: Int = 1024) throws -> WeightTensor {
        if w.dtype == .i8 { return try packInt8(w, rows: rows) }
        guard w.dtype == .bf16, w.shape.count == 2, w.packed == nil, OneDNN.shared.bf16Products else { return w }
        let n = w.shape[0], k = w.shape[1]
        let p = try OneDNN.shared.pack(weights: w.pointer, type: dnnl_bf16, k: k, n: n, rows: rows)
        var packed = w
        packed.packed = PackedWeight(desc: p.desc, bytes: p.bytes, size: p.size, key: "packed[\(k)x\(n)@\(rows)]")
        // The original stays readable (small products use it) but need not stay resident.
        w.releasePages()
        return packed
    }

    /// The int8 weight with a copy for products of many rows (where oneDNN has int8 products, that
    /// is with AVX-512 VNNI): in reelql's VNNI GEMM layout (`rq_gemm_s8_pack`) where its rows are a
    /// multiple of 4 bytes, else in oneDNN's blocked layout. The plain rows stay for products of
    /// few rows.
    static func packInt8(_ w: WeightTensor, rows: Int) throws -> WeightTensor {
        guard w.packed == nil, w.vnni == nil, OneDNN.shared.int8Products, let n = w.shape.first, n > 0 else { return w }
        let k = w.count / n
        var packed = w
        if rq_has_vnni() != 0, k % 4 == 0 {
            let pack = try VNNIPack(bytes: rq_gemm_s8_pack_bytes(n, k), what: w.name)
            ThreadPool.shared.parallelRanges((n + 63) / 64) { r in
                rq_gemm_s8_pack(w.pointer.assumingMemoryBound(to: Int8.self), n, k, r.lowerBound, r.upperBound, pack.bytes)
            }
            packed.vnni = pack
            return packed
        }
        let p = try OneDNN.shared.pack(weights: w.pointer, type: dnnl_s8, k: k, n: n, rows: rows)
        packed.packed = PackedWeight(desc: p.desc, bytes: p.bytes, size: p.size, key: "packed-s8[\(k)x\(n)@\(rows)]")
        return packed
    }

    /// Longest rows an int8 product takes: its integer sums stay exact in 32 bits.
    public static let int8MaxColumns = 65_536

    /// The weight (any precision, [rows, …]) as symmetric int8 with one scale per row (its largest
    /// magnitude / 127) and its rows' sums. A row holding inf or NaN is an error naming the weight.
    public static func quantize(_ w: WeightTensor, pool: ThreadPool = .shared) throws -> WeightTensor {
        if w.dtype == .i8, w.quantization != nil { return w }
        guard w.shape.count >= 2, let n = w.shape.first, n > 0 else {
            throw TensorError.shapeMismatch(operation: "int8 quantization of \(w.name)", expected: "[rows, columns…]", got: "\(w.shape)")
        }
        let k = w.count / n
        guard k > 0, k <= int8MaxColumns else {
            throw TensorError.shapeMismatch(operation: "int8 quantization of \(w.name)", expected: "1…\(int8MaxColumns) columns", got: "\(w.shape)")
        }
        guard [.f32, .bf16, .f16].contains(w.dtype) else {
            throw TensorError.unsupportedDType(operation: "int8 quantization of '\(w.name)'", dtype: w.dtype.rawValue)
        }
        let bytes = try AlignedBytes(byteCount: n * k, what: "int8 copy of \(w.name)")
        let rows = try Int8Rows(count: n, what: w.name)
        let q = bytes.pointer.assumingMemoryBound(to: Int8.self)
        // Rows in chunks, each widened to f32 in its own buffer (one chunk per worker at a time).
        let chunk = max(1, min(n, (1 << 20) / k))
        let failed = UnsafeMutablePointer<Int>.allocate(capacity: 2)
        defer { failed.deallocate() }
        failed.initialize(repeating: 0, count: 2) // [rows with inf/NaN, chunks without memory]
        let lock = NSLock()
        pool.parallelRanges((n + chunk - 1) / chunk) { range in
            guard let f = malloc(chunk * k * 4)?.assumingMemoryBound(to: Float.self) else {
                lock.withLock { failed[1] += 1 }
                return
            }
            defer { free(f) }
            for c in range {
                let r0 = c * chunk, count = min(chunk, n - r0), src = w.pointer + r0 * k * w.dtype.size
                switch w.dtype {
                case .bf16: rq_bf16_to_f32(src.assumingMemoryBound(to: UInt16.self), f, count * k)
                case .f16: rq_f16_to_f32(src.assumingMemoryBound(to: UInt16.self), f, count * k)
                default: f.update(from: src.assumingMemoryBound(to: Float.self), count: count * k)
                }
                let bad = rq_quantize_weights(f, count, k, q + r0 * k, rows.scales + r0, rows.sums + r0)
                if bad > 0 { lock.withLock { failed[0] += bad } }
            }
        }
        guard failed[1] == 0 else { throw TensorError.allocationFailed(what: "int8 quantization of \(w.name)", size: "\(chunk * k * 4) bytes") }
        guard failed[0] == 0 else {
            throw TensorError.backend(operation: "int8 quantization of \(w.name)", reason: "\(failed[0]) rows hold inf or NaN")
        }
        var out = WeightTensor(name: w.name, dtype: .i8, shape: w.shape, pointer: UnsafeRawPointer(bytes.pointer), owner: bytes)
        out.quantization = rows
        // The source is no longer read: a mapped checkpoint's pages can leave memory.
        w.releasePages()
        return out
    }

    /// The activation rows x [m, k] quantized (u8 with offset 128, one scale per row) for `body`.
    static func withQuantizedRows<R>(_ x: UnsafePointer<Float>, rows m: Int, cols k: Int, pool: ThreadPool,
                                     _ body: (UnsafePointer<UInt8>, UnsafePointer<Float>) throws -> R) throws -> R {
        try ScratchPool.shared.withBuffer(bytes: m * k + m * 4 + 64) { raw in
            let xs = raw.assumingMemoryBound(to: Float.self)
            let xq = (raw + (m * 4 + 63) / 64 * 64).assumingMemoryBound(to: UInt8.self)
            pool.parallelRanges(m, grain: max(1, (1 << 14) / max(1, k))) { r in
                rq_quantize_activations(x + r.lowerBound * k, r.count, k, xq + r.lowerBound * k, xs + r.lowerBound)
            }
            return try body(xq, xs)
        }
    }

    static func int8Parts(_ w: WeightTensor) throws -> (q: UnsafePointer<Int8>, rows: Int8Rows) {
        guard let rows = w.quantization else {
            throw TensorError.unsupportedDType(operation: "linear \(w.name) (int8 without scales; see Linear.quantize)", dtype: w.dtype.rawValue)
        }
        return (w.pointer.assumingMemoryBound(to: Int8.self), rows)
    }

    /// int8 weights × a few rows: reelql's kernels, each weight row read once for all of them.
    static func gemvS8(x: UnsafePointer<Float>, batch m: Int, w: WeightTensor, y: UnsafeMutablePointer<Float>, pool: ThreadPool) throws {
        let (q, rows) = try int8Parts(w)
        let n = w.shape[0], k = w.count / n
        try withQuantizedRows(x, rows: m, cols: k, pool: pool) { xq, xs in
            pool.parallelRanges(n, grain: 64) { r in
                rq_gemm_small_s8(q, rows.scales, rows.sums, xq, xs, y, m, n, k, r.lowerBound, r.upperBound)
            }
        }
    }

    /// The two int8 products: reelql's GEMV kernels (each weight row read once for up to four
    /// rows of x at a time) and a GEMM (reelql's on weights packed for it, else oneDNN's u8 × s8).
    public enum Int8Kernel: Sendable { case gemv, gemm }

    /// The faster int8 kernel for `rows` rows of `columns` (weights from memory; `reelql bench
    /// kernels`, int8 products by rows, milliseconds per matrix). The GEMV kernels read each
    /// weight row once for all rows of x, which must stay in L1 while they do: they win while x
    /// is small (one row; up to 12 rows of ≤ 24 KiB together: 1536 columns × 12 rows 0.50 ms
    /// against oneDNN's 0.56), the GEMM beyond (8960 columns × 9 rows, a decoding step's down
    /// projection: 0.78 ms against oneDNN's 0.52, 0.80 against reelql's 0.53; 4096 × 8 rows: 0.98
    /// against 0.74, 0.97 against 0.61; 1536 × 16 rows: 0.70 against 0.68, 0.18 against 0.16).
    /// `packed`: the weight is packed for reelql's GEMM, which then takes one row too: it matched
    /// or beat the GEMV kernels there in three runs (1536 columns × 8960 rows: 0.44–0.50 ms
    /// against 0.52–0.59), and one-sequence int8 decoding was faster in three alternated pairs.
    public static func int8Kernel(rows m: Int, columns k: Int, packed: Bool = false) -> Int8Kernel {
        guard OneDNN.shared.int8Products else { return .gemv }
        if m == 1 { return packed ? .gemm : .gemv }
        return m <= 12 && m * k <= 24 << 10 ? .gemv : .gemm
    }
    /// Whether the int8 GEMM is available here (`Int8Kernel.gemm`): where oneDNN's int8 products
    /// are exact (AVX-512 VNNI, nothing capping oneDNN, no `REELQL_NO_ONEDNN_INT8`), which
    /// `Linear.pack` also requires to pack a weight for reelql's GEMM.
    public static var hasInt8GEMM: Bool { OneDNN.shared.int8Products }

    /// x · Wᵀ (+ bias) into `y` for an int8 `w`, through the given kernel (both give the same
    /// bits; `forward` picks one by row count). The GEMM needs `hasInt8GEMM`.
    public static func forwardInt8(_ x: Tensor, _ w: WeightTensor, bias: Tensor? = nil, into y: Tensor, rows m: Int,
                                   kernel: Int8Kernel, then epilogue: RowEpilogue? = nil, pool: ThreadPool = .shared) throws {
        let n = w.shape.count == 2 ? w.shape[0] : 0, k = w.shape.count == 2 ? w.shape[1] : 0
        guard w.dtype == .i8, n > 0, k > 0, m >= 0, x.count == m * k, y.count == m * n, bias.map({ $0.count == n }) ?? true else {
            throw TensorError.shapeMismatch(operation: "int8 linear \(w.name)", expected: "an int8 [\(n), \(k)] weight, x [\(m), \(k)], y [\(m), \(n)]",
                                            got: "\(w.dtype.rawValue) \(w.shape), x \(x.shape), y \(y.shape)")
        }
        switch kernel {
        case .gemm where OneDNN.shared.int8Products:
            // The bias goes into the product's epilogue: one pass over y fewer.
            try gemmS8(x: x.pointer, m: m, w: w, bias: bias.map { UnsafePointer($0.pointer) }, y: y.pointer, then: epilogue, pool: pool)
        case .gemm:
            throw TensorError.unsupportedDType(operation: "int8 GEMM \(w.name) (no exact int8 products on this CPU)", dtype: w.dtype.rawValue)
        case .gemv:
            try gemvS8(x: x.pointer, batch: m, w: w, y: y.pointer, pool: pool)
            finish(y, rows: m, bias: bias, then: epilogue, pool: pool)
        }
    }

    /// int8 weights × many rows: reelql's GEMM (`vnniGEMM`) on weights packed for it; else
    /// oneDNN's u8 × s8 GEMM into s32 sums, then the kernels' epilogue (with the bias, if any).
    static func gemmS8(x: UnsafePointer<Float>, m: Int, w: WeightTensor, bias: UnsafePointer<Float>?,
                       y: UnsafeMutablePointer<Float>, then epilogue: RowEpilogue? = nil, pool: ThreadPool) throws {
        let k = w.count / w.shape[0]
        try withQuantizedRows(x, rows: m, cols: k, pool: pool) { xq, xs in
            try gemmS8(quantized: xq, scales: xs, m: m, w: w, bias: bias, y: y, then: epilogue, pool: pool)
        }
    }

    /// The same product of rows already quantized (u8 [m, k], scales [m]).
    static func gemmS8(quantized xq: UnsafePointer<UInt8>, scales xs: UnsafePointer<Float>, m: Int, w: WeightTensor,
                       bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, then epilogue: RowEpilogue? = nil,
                       pool: ThreadPool) throws {
        if try vnniGEMM(xq, xs, m: m, w: w, bias: bias, y: y, then: epilogue, pool: pool) { return }
        let rows = try int8Sums(xq, m: m, w: w, into: UnsafeMutableRawPointer(y)) // in y's own memory (same size)
        let n = w.shape[0]
        // Jobs of at least 64 KB of rows; with an epilogue, each in blocks of that size, each
        // finished while it is in cache.
        let rows64KB = max(1, (1 << 14) / max(1, n)), block = epilogue == nil ? m : rows64KB
        pool.parallelRanges(m, grain: rows64KB) { r in
            for b0 in stride(from: r.lowerBound, to: r.upperBound, by: block) {
                let b = b0..<min(r.upperBound, b0 + block), off = b0 * n
                rq_dequantize_s32(UnsafeMutableRawPointer(y).assumingMemoryBound(to: Int32.self) + off, rows.scales, rows.sums,
                                  xs + b0, bias, y + off, b.count, n)
                epilogue?(b)
            }
        }
    }

    /// y = xq · Wᵀ (+ bias) by reelql's VNNI GEMM where the weight is packed for it (tiles of 6 rows
    /// × 64 columns over the whole row, the int8 epilogue applied in registers): jobs of 48 rows,
    /// whose activation bytes stay in L2, each finished by `epilogue` right after its product;
    /// with fewer than two such jobs a thread, jobs of all rows × a share of the column groups
    /// (rows split too where groups are fewer than twice the threads), the epilogue after them
    /// all. The bits of oneDNN's path. False (nothing done) where the weight is not packed for it
    /// or the thread's forced kernel level is below AVX-512.
    static func vnniGEMM(_ xq: UnsafePointer<UInt8>, _ xs: UnsafePointer<Float>, m: Int, w: WeightTensor,
                         bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, then epilogue: RowEpilogue?,
                         pool: ThreadPool) throws -> Bool {
        guard let pack = w.vnni, rq_has_vnni() != 0 else { return false }
        let (_, rows) = try int8Parts(w)
        let n = w.shape[0], k = w.count / n, groups = (n + 63) / 64, mc = 48
        let blocks = (m + mc - 1) / mc
        // (rq_gemm_s8 declines only without VNNI, checked above, or rows not 4-byte groups, which
        // are never packed for it; should it decline, that is an error, not rows left unwritten.)
        let declined = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        defer { declined.deallocate() }
        declined.initialize(to: 0)
        let lock = NSLock()
        if blocks >= 2 * pool.threads {
            pool.parallelRanges(blocks) { r in
                for b in r {
                    let m0 = b * mc, m1 = min(m, m0 + mc)
                    guard rq_gemm_s8(xq, xs, pack.bytes, rows.scales, rows.sums, bias, y, m0, m1, 0, groups, n, k) != 0 else {
                        lock.withLock { declined.pointee += 1 }
                        return
                    }
                    epilogue?(m0..<m1)
                }
            }
        } else {
            // Few rows: each job all rows × a share of the column groups (the weight, which
            // dominates, read once), two shares a thread; rows split too only where there are
            // fewer groups than that (many cores), in parts of whole 6-row tiles.
            let shares = min(groups, 2 * pool.threads)
            let parts = max(1, min((m + 5) / 6, (2 * pool.threads + shares - 1) / shares))
            let rowsPerPart = ((m + parts - 1) / parts + 5) / 6 * 6, perShare = (groups + shares - 1) / shares
            pool.parallelRanges(shares * parts) { r in
                for job in r {
                    let g0 = job / parts * perShare, m0 = job % parts * rowsPerPart
                    guard m0 < m || m == 0 else { continue }
                    if rq_gemm_s8(xq, xs, pack.bytes, rows.scales, rows.sums, bias, y, m0, min(m, m0 + rowsPerPart), g0,
                                  min(groups, g0 + perShare), n, k) == 0 {
                        lock.withLock { declined.pointee += 1 }
                    }
                }
            }
            if declined.pointee == 0, let epilogue { pool.parallelRanges(m, grain: 8, epilogue) }
        }
        guard declined.pointee == 0 else {
            throw TensorError.backend(operation: "int8 GEMM \(w.name)", reason: "the VNNI kernel declined [\(n), \(k)]")
        }
        return true
    }

    /// acc [m, n] = xq [m, k] · Wᵀ as s32 sums (oneDNN's u8 × s8 GEMM); returns the weight's rows.
    static func int8Sums(_ xq: UnsafePointer<UInt8>, m: Int, w: WeightTensor, into acc: UnsafeMutableRawPointer) throws -> Int8Rows {
        let (q, rows) = try int8Parts(w)
        let n = w.shape[0], k = w.count / n
        try OneDNN.shared.matmul(
            src: .init(dims: [m, k], strides: [k, 1], type: dnnl_u8, pointer: UnsafeMutableRawPointer(mutating: xq)),
            weights: w.packed.map { .init(packed: $0.desc, key: $0.key, pointer: $0.bytes) }
                ?? .init(dims: [k, n], strides: [1, k], type: dnnl_s8, pointer: UnsafeMutableRawPointer(mutating: q)),
            dst: .init(dims: [m, n], strides: [n, 1], type: dnnl_s32, pointer: acc))
        return rows
    }

    /// y = fc2(act(fc1(x) + b1)) + b2 (a ViT block's MLP): `int8MLP` where it applies, else the
    /// three steps (`hidden` [m, fc1 rows] holds the activations).
    public static func mlp(_ x: Tensor, rows m: Int, fc1: WeightTensor, bias1: Tensor?, activation: Ops.Activation,
                           fc2: WeightTensor, bias2: Tensor?, hidden: Tensor, into y: Tensor, pool: ThreadPool = .shared) throws {
        if try int8MLP(x, rows: m, fc1: fc1, bias1: bias1, activation: activation, fc2: fc2, bias2: bias2, hidden: hidden,
                       into: y, pool: pool) { return }
        try forward(x, fc1, bias: bias1, into: hidden, rows: m, pool: pool)
        Ops.activate(hidden, activation, pool: pool)
        try forward(hidden, fc2, bias: bias2, into: y, rows: m, pool: pool)
    }

    /// fc2(act(fc1(x) + b1)) + b2 for int8 weights on the many-row path, written into y: between
    /// the two products, one pass per row takes the first one's output to the second one's input
    /// bytes (`rq_act_quantize` right after each job of reelql's GEMM; `rq_s8_epilogue_act_quantize`
    /// from oneDNN's sums), where `forward` → `Ops.activate` → `forward` takes three.
    /// The same bits as those three steps; `hidden` [m, fc1 rows] ends holding the activated
    /// floats. False (nothing done) where the three steps are the way: other weight types, rows
    /// the GEMV kernels take, no oneDNN int8 products.
    public static func int8MLP(_ x: Tensor, rows m: Int, fc1: WeightTensor, bias1: Tensor?, activation: Ops.Activation,
                               fc2: WeightTensor, bias2: Tensor?, hidden: Tensor, into y: Tensor,
                               pool: ThreadPool = .shared) throws -> Bool {
        guard fc1.dtype == .i8, fc2.dtype == .i8, fc1.shape.count == 2, fc2.shape.count == 2,
              int8Kernel(rows: m, columns: fc1.shape[1]) == .gemm else { return false }
        let n1 = fc1.shape[0], k = fc1.shape[1], n2 = fc2.shape[0]
        guard fc2.shape[1] == n1, x.count == m * k, hidden.count == m * n1, y.count == m * n2,
              bias1.map({ $0.count == n1 }) ?? true, bias2.map({ $0.count == n2 }) ?? true else {
            throw TensorError.shapeMismatch(operation: "int8 MLP \(fc1.name) → \(fc2.name)",
                                            expected: "x [\(m), \(k)], hidden [\(m), \(n1)], out [\(m), \(n2)]",
                                            got: "x \(x.shape), fc2 \(fc2.shape), hidden \(hidden.shape), out \(y.shape)")
        }
        let act: Int32
        switch activation {
        case .silu: act = 0
        case .gelu: act = 1
        case .geluTanh: act = 2
        case .quickGelu: act = 3
        }
        let scalesAt = (m * n1 + 63) / 64 * 64
        try withQuantizedRows(x.pointer, rows: m, cols: k, pool: pool) { xq, xs in
            try ScratchPool.shared.withBuffer(bytes: scalesAt + m * 4) { raw in
                let hq = raw.assumingMemoryBound(to: UInt8.self), hs = (raw + scalesAt).assumingMemoryBound(to: Float.self)
                let h = hidden.pointer, b1 = bias1.map { UnsafePointer($0.pointer) }
                // reelql's GEMM: each job's rows, finished in registers, go on to bytes at once.
                let vnni = try vnniGEMM(xq, xs, m: m, w: fc1, bias: b1, y: h, then: { r in
                    rq_act_quantize(h + r.lowerBound * n1, r.count, n1, act, hq + r.lowerBound * n1, hs + r.lowerBound)
                }, pool: pool)
                if !vnni {
                    // oneDNN's s32 sums in hidden's memory, then one pass per row from sums to bytes.
                    let rows = try int8Sums(xq, m: m, w: fc1, into: UnsafeMutableRawPointer(h))
                    let acc = UnsafeMutableRawPointer(h).assumingMemoryBound(to: Int32.self)
                    pool.parallelRanges(m, grain: max(1, (1 << 14) / max(1, n1))) { r in
                        rq_s8_epilogue_act_quantize(acc + r.lowerBound * n1, rows.scales, rows.sums, xs + r.lowerBound, b1,
                                                    r.count, n1, act, hq + r.lowerBound * n1, hs + r.lowerBound)
                    }
                }
                try gemmS8(quantized: hq, scales: hs, m: m, w: fc2, bias: bias2.map { UnsafePointer($0.pointer) }, y: y.pointer, pool: pool)
            }
        }
        return true
    }

    /// C [m, n] = A [m, k] · Bᵀ with B [n, k], row-major, through OpenBLAS.
    public static func sgemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                             c: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(k), 0, c, Int32(n))
    }

    /// bf16 weights × a few vectors (rounded to bf16): each weight row is read once for all of
    /// them, rows split over threads.
    static func gemvBF16(x: UnsafePointer<Float>, batch: Int, w: UnsafePointer<UInt16>, rows: Int, cols: Int,
                         y: UnsafeMutablePointer<Float>, pool: ThreadPool) throws {
        try ScratchPool.shared.withHalfs(batch * cols) { xb in
            rq_f32_to_bf16(x, xb, batch * cols)
            pool.parallelRanges(rows, grain: 64) { r in
                rq_gemm_small_bf16(w, xb, y, batch, rows, cols, r.lowerBound, r.upperBound)
            }
        }
    }

    /// bf16 GEMM through oneDNN: activations rounded to bf16, weights read in place, f32 out.
    static func gemmBF16(x: UnsafePointer<Float>, m: Int, k: Int, w: WeightTensor, n: Int,
                         y: UnsafeMutablePointer<Float>, pool: ThreadPool) throws {
        guard OneDNN.shared.bf16Products else {
            return try gemmBF16Widened(x: x, m: m, k: k, w: w.pointer.assumingMemoryBound(to: UInt16.self), n: n, y: y, pool: pool)
        }
        try ScratchPool.shared.withHalfs(m * k) { xb in
            pool.parallelRanges(m * k, grain: 1 << 15) { r in rq_f32_to_bf16(x + r.lowerBound, xb + r.lowerBound, r.count) }
            try OneDNN.shared.matmul(
                src: .init(dims: [m, k], strides: [k, 1], type: dnnl_bf16, pointer: UnsafeMutableRawPointer(xb)),
                weights: w.packed.map { .init(packed: $0.desc, key: $0.key, pointer: $0.bytes) }
                    ?? .init(dims: [k, n], strides: [1, k], type: dnnl_bf16, pointer: UnsafeMutableRawPointer(mutating: w.pointer)),
                dst: .init(dims: [m, n], strides: [n, 1], type: dnnl_f32, pointer: UnsafeMutableRawPointer(y)))
        }
    }

    /// The same product where oneDNN has no bf16 matmul: activations rounded to bf16, then both
    /// operands widened to f32 (exactly) for OpenBLAS — bf16 inputs, f32 accumulation, as above.
    static func gemmBF16Widened(x: UnsafePointer<Float>, m: Int, k: Int, w: UnsafePointer<UInt16>, n: Int,
                                y: UnsafeMutablePointer<Float>, pool: ThreadPool) throws {
        try ScratchPool.shared.withBuffer(bytes: (m + n) * k * 4) { raw in
            let xf = raw.assumingMemoryBound(to: Float.self), wf = xf + m * k
            try ScratchPool.shared.withHalfs(m * k) { xb in
                pool.parallelRanges(m * k, grain: 1 << 15) { r in
                    rq_f32_to_bf16(x + r.lowerBound, xb + r.lowerBound, r.count)
                    rq_bf16_to_f32(xb + r.lowerBound, xf + r.lowerBound, r.count)
                }
            }
            pool.parallelRanges(n * k, grain: 1 << 15) { r in rq_bf16_to_f32(w + r.lowerBound, wf + r.lowerBound, r.count) }
            sgemm(m: m, n: n, k: k, a: xf, b: wf, c: y)
        }
    }
}

/// An int8 weight in `rq_gemm_s8`'s packed layout (owned memory).
final class VNNIPack: @unchecked Sendable {
    let bytes: UnsafeMutablePointer<Int8>
    init(bytes count: Int, what: String) throws {
        guard let p = aligned_alloc(64, (max(1, count) + 63) / 64 * 64) else {
            throw TensorError.allocationFailed(what: "packed int8 copy of \(what)", size: "\(count) bytes")
        }
        bytes = p.assumingMemoryBound(to: Int8.self)
    }
    deinit { free(bytes) }
}

/// An int8 weight's per-row scales (max |w| / 127) and sums of its int8 values (owned memory).
public final class Int8Rows: @unchecked Sendable {
    let scales: UnsafeMutablePointer<Float>
    let sums: UnsafeMutablePointer<Int32>

    init(count: Int, what: String) throws {
        guard let s = malloc(max(1, count) * 4), let t = malloc(max(1, count) * 4) else {
            throw TensorError.allocationFailed(what: "int8 scales of \(what)", size: "\(count * 8) bytes")
        }
        scales = s.assumingMemoryBound(to: Float.self)
        sums = t.assumingMemoryBound(to: Int32.self)
    }
    deinit {
        free(scales)
        free(sums)
    }
}

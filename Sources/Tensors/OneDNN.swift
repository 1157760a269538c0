import CDNNL
import Foundation

/// oneDNN matrix products. Primitives are created once per shape and layout and cached.
final class OneDNN: @unchecked Sendable {
    static let shared = OneDNN()

    private var engine: dnnl_engine_t?
    private var stream: dnnl_stream_t?
    private var cache: [String: dnnl_primitive_t] = [:]
    private let lock = NSLock()

    private init() {
        _ = ThreadPool.shared // sizes OpenMP's team before oneDNN starts it
        dnnl_engine_create(&engine, dnnl_cpu, 0)
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue)
    }

    /// A matrix operand: logical dims, strides in elements, element type, memory.
    struct Operand {
        var dims: [Int]
        var strides: [Int]
        var type: dnnl_data_type_t
        var pointer: UnsafeMutableRawPointer

        var key: String { "\(dims)/\(strides)/\(type.rawValue)" }

        func descriptor() throws -> dnnl_memory_desc_t {
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

    /// dst = src · weights over the last two dimensions (leading dimensions broadcast as batches).
    func matmul(src: Operand, weights: Operand, dst: Operand) throws {
        let key = src.key + "|" + weights.key + "|" + dst.key
        let primitive = try lock.withLock { () throws -> dnnl_primitive_t in
            if let p = cache[key] { return p }
            var s = try src.descriptor(), w = try weights.descriptor(), d = try dst.descriptor()
            var desc = dnnl_matmul_desc_t()
            var status = dnnl_matmul_desc_init(&desc, &s, &w, nil, &d)
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
            return p
        }
        var sm = try src.descriptor(), wm = try weights.descriptor(), dm = try dst.descriptor()
        var ms: dnnl_memory_t? = nil, mw: dnnl_memory_t? = nil, md: dnnl_memory_t? = nil
        dnnl_memory_create(&ms, &sm, engine, src.pointer)
        dnnl_memory_create(&mw, &wm, engine, weights.pointer)
        dnnl_memory_create(&md, &dm, engine, dst.pointer)
        defer { dnnl_memory_destroy(ms); dnnl_memory_destroy(mw); dnnl_memory_destroy(md) }
        var args = [dnnl_exec_arg_t(arg: reelql_dnnl_arg_src(), memory: ms),
                    dnnl_exec_arg_t(arg: reelql_dnnl_arg_weights(), memory: mw),
                    dnnl_exec_arg_t(arg: reelql_dnnl_arg_dst(), memory: md)]
        // One stream: executions are serialised (oneDNN threads each one internally).
        let status = lock.withLock { () -> dnnl_status_t in
            let s = dnnl_primitive_execute(primitive, stream, 3, &args)
            dnnl_stream_wait(stream)
            return s
        }
        guard status == dnnl_success else { throw OneDNN.failure("matmul execution", status) }
    }
}

// FFmpeg's C API for Swift. Macros that Swift cannot import are exposed as inline functions.
#ifndef REELQL_CFFMPEG_SHIM_H
#define REELQL_CFFMPEG_SHIM_H

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/vfs.h>
#include <libavformat/avformat.h>
#include <libavcodec/avcodec.h>
#include <libavutil/avutil.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libavutil/log.h>
#include <libswscale/swscale.h>

static inline int reelql_averror_eagain(void) { return AVERROR(EAGAIN); }
static inline int reelql_averror_eof(void) { return AVERROR_EOF; }
static inline int reelql_averror_invaliddata(void) { return AVERROR_INVALIDDATA; }
static inline int reelql_averror_enomem(void) { return AVERROR(ENOMEM); }
static inline int64_t reelql_nopts(void) { return AV_NOPTS_VALUE; }
static inline int reelql_pkt_flag_key(void) { return AV_PKT_FLAG_KEY; }
static inline int reelql_pkt_flag_corrupt(void) { return AV_PKT_FLAG_CORRUPT; }
static inline int reelql_pkt_flag_discard(void) { return AV_PKT_FLAG_DISCARD; }
static inline int reelql_frame_flag_corrupt(void) { return AV_FRAME_FLAG_CORRUPT; }

/// The display-matrix rotation of a stream in degrees counter-clockwise (FFmpeg's convention),
/// or NaN when the stream has no display matrix. `*flipped` is set when the matrix mirrors.
static inline double reelql_stream_rotation(const AVStream *st, int *flipped) {
    size_t size = 0;
    const int32_t *m = (const int32_t *)av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (flipped) *flipped = 0;
    if (!m || size < 9 * sizeof(int32_t)) return __builtin_nan("");
    if (flipped) {
        // A negative determinant of the 2x2 part means the matrix includes a mirror.
        double det = (double)m[0] * (double)m[4] - (double)m[1] * (double)m[3];
        *flipped = det < 0;
    }
    return av_display_rotation_get(m);
}

/// Whether a decoder error message is about references the decoder does not hold, which is
/// what decoding from a keyframe in the middle of an open-GOP stream produces.
static inline int reelql_is_missing_reference_message(const char *fmt) {
    return fmt && (strstr(fmt, "mmco") || strstr(fmt, "POC") || strstr(fmt, "reference picture") ||
                   strstr(fmt, "Missing reference") || strstr(fmt, "RPS"));
}

/// Decoder errors are counted per decoder: a decoder context whose `opaque` points at five ints
/// gets [1] incremented for each missing-reference error it logs and [0] for any other error
/// (also from its frame threads, which copy `opaque`), and [2] for each picture refused as over
/// its max_pixels, whose size goes to [3] and [4]. A demuxer's `opaque` points at two ints. Every message then goes to FFmpeg's
/// default logger, which applies av_log_set_level.
static void reelql_log_callback(void *avcl, int level, const char *fmt, va_list vl) {
    if (avcl && level <= AV_LOG_ERROR) {
        const AVClass *cls = *(const AVClass **)avcl;
        if (cls && cls->class_name && strcmp(cls->class_name, "AVCodecContext") == 0) {
            AVCodecContext *ctx = (AVCodecContext *)avcl;
            if (ctx->opaque && av_codec_is_decoder(ctx->codec)) {
                int *counts = (int *)ctx->opaque;
                __atomic_fetch_add(&counts[reelql_is_missing_reference_message(fmt) ? 1 : 0], 1, __ATOMIC_RELAXED);
            }
        } else if (cls && cls->class_name && strcmp(cls->class_name, "IMGUTILS") == 0 && cls->parent_log_context_offset > 0 &&
                   fmt && strstr(fmt, "exceeds")) {
            // A picture over the decoder's max_pixels (logged by av_image_check_size2 for the
            // decoder context it names as its parent): [2] counts them, [3] × [4] is the size.
            void *parent = *(void **)((char *)avcl + cls->parent_log_context_offset);
            const AVClass *pc = parent ? *(const AVClass **)parent : NULL;
            if (pc && pc->class_name && strcmp(pc->class_name, "AVCodecContext") == 0) {
                AVCodecContext *ctx = (AVCodecContext *)parent;
                if (ctx->opaque && ctx->codec && av_codec_is_decoder(ctx->codec)) {
                    int *counts = (int *)ctx->opaque;
                    char message[192];
                    unsigned w = 0, h = 0;
                    va_list copy;
                    va_copy(copy, vl);
                    vsnprintf(message, sizeof message, fmt, copy);
                    va_end(copy);
                    // Counted only with its size read (the error names the size).
                    if (sscanf(message, "Picture size %ux%u", &w, &h) == 2 && w <= INT_MAX && h <= INT_MAX) {
                        __atomic_store_n(&counts[3], (int)w, __ATOMIC_RELAXED);
                        __atomic_store_n(&counts[4], (int)h, __ATOMIC_RELAXED);
                        __atomic_fetch_add(&counts[2], 1, __ATOMIC_RELAXED);
                    }
                }
            }
        } else if (cls && cls->class_name && strcmp(cls->class_name, "AVFormatContext") == 0) {
            // Demuxer errors: [1] the file ends before the container says, [0] anything else.
            AVFormatContext *ctx = (AVFormatContext *)avcl;
            if (ctx->opaque) {
                int *counts = (int *)ctx->opaque;
                int premature = fmt && (strstr(fmt, "prematurely") || strstr(fmt, "truncated") || strstr(fmt, "Truncated"));
                __atomic_fetch_add(&counts[premature ? 1 : 0], 1, __ATOMIC_RELAXED);
            }
        }
    }
    av_log_default_callback(avcl, level, fmt, vl);
}
static inline void reelql_install_log_counter(void) { av_log_set_callback(reelql_log_callback); }
static inline int reelql_atomic_load(const int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/// Silences or restores FFmpeg's own logging.
static inline void reelql_set_log_level(int level) { av_log_set_level(level); }
static inline int reelql_log_quiet(void) { return AV_LOG_QUIET; }
static inline int reelql_log_error(void) { return AV_LOG_ERROR; }


/// Maps the deprecated full-range "J" YUV formats to their plain twins, setting *full_range.
static inline enum AVPixelFormat reelql_dejpeg(enum AVPixelFormat f, int *full_range) {
    switch (f) {
    case AV_PIX_FMT_YUVJ420P: *full_range = 1; return AV_PIX_FMT_YUV420P;
    case AV_PIX_FMT_YUVJ422P: *full_range = 1; return AV_PIX_FMT_YUV422P;
    case AV_PIX_FMT_YUVJ444P: *full_range = 1; return AV_PIX_FMT_YUV444P;
    case AV_PIX_FMT_YUVJ440P: *full_range = 1; return AV_PIX_FMT_YUV440P;
    case AV_PIX_FMT_YUVJ411P: *full_range = 1; return AV_PIX_FMT_YUV411P;
    default: return f;
    }
}

/// Sets the source YUV matrix (an AVColorSpace) and range of a scaler converting to full-range RGB.
static inline void reelql_sws_set_source_colorspace(struct SwsContext *c, int colorspace, int full_range) {
    int cs = SWS_CS_DEFAULT;
    switch (colorspace) {
    case AVCOL_SPC_BT709: cs = SWS_CS_ITU709; break;
    case AVCOL_SPC_FCC: cs = SWS_CS_FCC; break;
    case AVCOL_SPC_SMPTE240M: cs = SWS_CS_SMPTE240M; break;
    case AVCOL_SPC_BT2020_NCL: case AVCOL_SPC_BT2020_CL: cs = SWS_CS_BT2020; break;
    case AVCOL_SPC_BT470BG: case AVCOL_SPC_SMPTE170M: cs = SWS_CS_ITU601; break;
    default: cs = SWS_CS_DEFAULT; break;
    }
    sws_setColorspaceDetails(c, sws_getCoefficients(cs), full_range,
                             sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
}

/// Scales a whole decoded frame into one packed destination plane.
static inline int reelql_sws_scale_frame(struct SwsContext *c, const AVFrame *f, uint8_t *dst, int dst_stride) {
    uint8_t *planes[4] = { dst, NULL, NULL, NULL };
    int strides[4] = { dst_stride, 0, 0, 0 };
    return sws_scale(c, (const uint8_t * const *)f->data, f->linesize, 0, f->height, planes, strides);
}

/// Points an AVFrame at one packed plane owned by the caller.
static inline void reelql_frame_set_packed(AVFrame *f, uint8_t *data, int stride) {
    f->data[0] = data;
    f->linesize[0] = stride;
}

/// The file system type (statfs f_type, a linux/magic.h number) of `path`, following links;
/// -1 with errno set when statfs fails. (Swift's Glibc module does not export statfs.)
static inline long long reelql_fs_type(const char *path) {
    struct statfs fs;
    if (statfs(path, &fs) != 0) return -1;
    return (long long)(unsigned int)fs.f_type;
}

#endif

// FFmpeg's C API for Swift. Macros that Swift cannot import are exposed as inline functions.
#ifndef REELQL_CFFMPEG_SHIM_H
#define REELQL_CFFMPEG_SHIM_H

#include <errno.h>
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

/// Silences or restores FFmpeg's own logging.
static inline void reelql_set_log_level(int level) { av_log_set_level(level); }
static inline int reelql_log_quiet(void) { return AV_LOG_QUIET; }
static inline int reelql_log_error(void) { return AV_LOG_ERROR; }

#endif

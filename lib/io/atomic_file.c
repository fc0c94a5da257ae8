/* Atomic file replacement: write to a temporary file in the target's
 * directory, then fsync it, rename it over the target and fsync the
 * directory. Readers see either the old file or the complete new one, and a
 * crash or a failed write never leaves a partial target behind.
 *
 * The temporary name is <path>.tmp-<16 hex digits>, created with O_EXCL (so an
 * existing file is never clobbered) and mode 0666 filtered by the umask, like
 * fopen would. Writes go through a 64 KiB buffer so callers may write small
 * fields one by one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../internal.h"

#define ATOMIC_BUF 65536

struct peft__atomic_file {
    peft_ctx *ctx;
    const char *fn; /* caller's name for messages (static string) */
    int fd;
    char *path; /* target */
    char *tmp;  /* temporary file, removed on abort */
    size_t used;
    unsigned char buf[ATOMIC_BUF];
};

const char *peft__strerror(int err, char *buf, size_t size)
{
    /* GNU strerror_r (we build with _GNU_SOURCE): may return a static string. */
    return strerror_r(err, buf, size);
}

static peft_status fail_errno(peft__atomic_file *af, int err, const char *what, const char *path)
{
    char eb[128];
    return peft__fail(af->ctx, PEFT_ERR_IO, "%s: %s '%s': %s", af->fn, what, path,
                      peft__strerror(err, eb, sizeof eb));
}

static void release(peft__atomic_file *af)
{
    peft_ctx *ctx = af->ctx;
    peft__free(ctx, af->path);
    peft__free(ctx, af->tmp);
    peft__free(ctx, af);
}

static char *dup_str(peft_ctx *ctx, const char *s, size_t extra)
{
    size_t len = strlen(s), bytes;
    if (!peft__add_ok(len, extra + 1, &bytes)) return NULL;
    char *p = peft__malloc(ctx, bytes);
    if (p) memcpy(p, s, len + 1);
    return p;
}

peft_status peft__atomic_open(peft_ctx *ctx, const char *fn, const char *path, peft__atomic_file **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!path || !*path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: path is NULL or empty", fn);
    peft__atomic_file *af = peft__malloc(ctx, sizeof *af);
    if (!af) return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    af->ctx = ctx;
    af->fn = fn;
    af->fd = -1;
    af->used = 0;
    af->path = dup_str(ctx, path, 0);
    af->tmp = dup_str(ctx, path, 32);
    if (!af->path || !af->tmp) {
        release(af);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    }
    /* A name nobody else will pick: hash of time, pid, our address and the
     * attempt number (no global counter, no use of the context PRNG, whose
     * stream belongs to training). O_EXCL makes a collision a retry. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    seed ^= (uint64_t)getpid() << 32;
    seed ^= (uint64_t)(uintptr_t)af;
    size_t len = strlen(path);
    int err = 0;
    for (uint64_t attempt = 0; attempt < 64; attempt++) {
        snprintf(af->tmp + len, 32, ".tmp-%016llx", (unsigned long long)peft__hash64(seed, attempt));
        af->fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (af->fd >= 0) break;
        err = errno;
        if (err != EEXIST && err != EINTR) break;
    }
    if (af->fd < 0) {
        peft_status st = fail_errno(af, err, "cannot create a temporary file next to", path);
        release(af);
        return st;
    }
    *out = af;
    return PEFT_OK;
}

static peft_status write_all(peft__atomic_file *af, const unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t w = write(af->fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return fail_errno(af, errno, "cannot write temporary file for", af->path);
        }
        if (w == 0) return fail_errno(af, EIO, "cannot write temporary file for", af->path);
        p += w;
        n -= (size_t)w;
    }
    return PEFT_OK;
}

static peft_status flush_buf(peft__atomic_file *af)
{
    peft_status st = write_all(af, af->buf, af->used);
    af->used = 0;
    return st;
}

peft_status peft__atomic_write(peft__atomic_file *af, const void *data, size_t n)
{
    if (!af) return PEFT_ERR_INVALID_ARG;
    if (n == 0) return PEFT_OK;
    if (!data) return peft__fail(af->ctx, PEFT_ERR_INVALID_ARG, "%s: write of NULL data", af->fn);
    const unsigned char *p = data;
    if (af->used + n <= ATOMIC_BUF) {
        memcpy(af->buf + af->used, p, n);
        af->used += n;
        return PEFT_OK;
    }
    peft_status st = flush_buf(af);
    if (st != PEFT_OK) return st;
    if (n >= ATOMIC_BUF) return write_all(af, p, n); /* large blocks skip the copy */
    memcpy(af->buf, p, n);
    af->used = n;
    return PEFT_OK;
}

void peft__atomic_abort(peft__atomic_file *af)
{
    if (!af) return;
    if (af->fd >= 0) close(af->fd);
    unlink(af->tmp);
    release(af);
}

/* fsync the directory holding `path` so the rename itself is durable. Some
 * file systems cannot sync directories (EINVAL): that is not an error. */
static peft_status sync_dir(peft__atomic_file *af)
{
    const char *slash = strrchr(af->path, '/');
    char *dir;
    if (!slash) {
        dir = dup_str(af->ctx, ".", 0);
    } else {
        size_t dlen = slash == af->path ? 1 : (size_t)(slash - af->path);
        dir = peft__malloc(af->ctx, dlen + 1);
        if (dir) {
            memcpy(dir, af->path, dlen);
            dir[dlen] = '\0';
        }
    }
    if (!dir) return peft__fail(af->ctx, PEFT_ERR_NOMEM, "%s: out of memory", af->fn);
    peft_status st = PEFT_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        st = fail_errno(af, errno, "wrote the file but cannot open its directory", dir);
    } else {
        if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP)
            st = fail_errno(af, errno, "wrote the file but cannot sync its directory", dir);
        close(fd);
    }
    peft__free(af->ctx, dir);
    return st;
}

peft_status peft__atomic_commit(peft__atomic_file *af)
{
    if (!af) return PEFT_ERR_INVALID_ARG;
    peft_status st = flush_buf(af);
    if (st == PEFT_OK && fsync(af->fd) != 0)
        st = fail_errno(af, errno, "cannot sync temporary file for", af->path);
    if (st == PEFT_OK) {
        int rc = close(af->fd);
        af->fd = -1;
        if (rc != 0) st = fail_errno(af, errno, "cannot close temporary file for", af->path);
    }
    if (st == PEFT_OK && rename(af->tmp, af->path) != 0)
        st = fail_errno(af, errno, "cannot rename the temporary file over", af->path);
    if (st != PEFT_OK) {
        peft__atomic_abort(af);
        return st;
    }
    st = sync_dir(af);
    release(af);
    return st;
}

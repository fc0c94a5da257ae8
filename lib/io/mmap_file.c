/* Read-only whole-file mappings for the model readers.
 *
 * The readers validate every length and offset against `size` before they
 * touch a byte, so they never read past the mapping. (As with any mmap, a
 * file truncated by another process while mapped raises SIGBUS; model files
 * are not expected to change under us.) */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../internal.h"

peft_status peft__map_file(peft_ctx *ctx, const char *fn, const char *path, peft__mapped *out)
{
    out->data = NULL;
    out->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return peft__fail(ctx, PEFT_ERR_IO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return peft__fail(ctx, PEFT_ERR_IO, "%s: %s: cannot stat: %s", fn, path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return peft__fail(ctx, PEFT_ERR_IO, "%s: %s: not a regular file", fn, path);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: %s: file too large for this platform", fn, path);
    }
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return PEFT_OK;
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file referenced */
    if (p == MAP_FAILED) return peft__fail(ctx, PEFT_ERR_IO, "%s: %s: cannot map: %s", fn, path, strerror(e));
    out->data = p;
    out->size = size;
    return PEFT_OK;
}

void peft__unmap_file(peft__mapped *m)
{
    if (m && m->data) munmap((void *)m->data, m->size);
    if (m) {
        m->data = NULL;
        m->size = 0;
    }
}

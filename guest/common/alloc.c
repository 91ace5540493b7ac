/*
 * The guest's memory allocator, replacing the C library's.
 *
 * Every call runs in a fresh instance that lives for microseconds, so the allocator is
 * built for that: free lists of power-of-two blocks carved from the heap, and, above all,
 * it uses the linear memory the module starts with (between __heap_base and the initial
 * memory size) before it grows memory. zig's libc allocator grows memory on its first
 * allocation, and every grow costs the host an mprotect when the instance starts and
 * another when its slot is reset, each taking the process's mmap lock for writing and
 * shooting down TLBs on every other core: that, not the guest's own work, limited how many
 * calls per second a multi-threaded supervisor could serve.
 *
 * Blocks are 2^k bytes (k >= 4) with a 16-byte header holding k, so payloads stay 16-byte
 * aligned. Freed blocks go on the free list of their size and are reused by the next
 * allocation of that size. Memory is never returned: the instance is about to end.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HEADER 16
#define MIN_SHIFT 4
#define MAX_SHIFT 31
#define PAGE 65536u

extern unsigned char __heap_base;

struct header {
    size_t shift;
    size_t unused;
};

struct free_block {
    struct free_block *next;
};

static struct free_block *free_lists[MAX_SHIFT + 1];
static uintptr_t heap_next;
static uintptr_t heap_end;

/* Takes `size` bytes from the top of the heap, growing memory only when it is used up. */
static void *carve(size_t size)
{
    if (heap_end == 0) {
        heap_next = ((uintptr_t)&__heap_base + HEADER - 1) & ~(uintptr_t)(HEADER - 1);
        heap_end = (uintptr_t)__builtin_wasm_memory_size(0) * PAGE;
    }
    if (heap_end - heap_next < size) {
        size_t missing = size - (heap_end - heap_next);
        size_t pages = (missing + PAGE - 1) / PAGE;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1)
            return NULL;
        heap_end += pages * PAGE;
    }
    void *block = (void *)heap_next;
    heap_next += size;
    return block;
}

static size_t shift_for(size_t n)
{
    size_t shift = MIN_SHIFT;
    while (((size_t)1 << shift) - HEADER < n)
        shift++;
    return shift;
}

void *malloc(size_t n)
{
    if (n > ((size_t)1 << MAX_SHIFT) - HEADER) {
        errno = ENOMEM;
        return NULL;
    }
    size_t shift = shift_for(n);
    struct header *h;
    if (free_lists[shift]) {
        h = (struct header *)free_lists[shift];
        free_lists[shift] = free_lists[shift]->next;
    } else {
        h = carve((size_t)1 << shift);
        if (!h) {
            errno = ENOMEM;
            return NULL;
        }
    }
    h->shift = shift;
    return (unsigned char *)h + HEADER;
}

void free(void *p)
{
    if (!p)
        return;
    struct header *h = (struct header *)((unsigned char *)p - HEADER);
    struct free_block *block = (struct free_block *)h;
    size_t shift = h->shift;
    block->next = free_lists[shift];
    free_lists[shift] = block;
}

size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    struct header *h = (struct header *)((unsigned char *)p - HEADER);
    return ((size_t)1 << h->shift) - HEADER;
}

void *calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = malloc(count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    size_t usable = malloc_usable_size(p);
    if (n <= usable)
        return p;
    void *grown = malloc(n);
    if (!grown)
        return NULL;
    memcpy(grown, p, usable);
    free(p);
    return grown;
}

void *reallocarray(void *p, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, count * size);
}

/* Payloads are 16-byte aligned; stricter alignments are not needed by these tools. */
void *aligned_alloc(size_t alignment, size_t n)
{
    if (alignment > HEADER || (alignment & (alignment - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return malloc(n);
}

int posix_memalign(void **out, size_t alignment, size_t n)
{
    if (alignment > HEADER || (alignment & (alignment - 1)) || alignment < sizeof(void *))
        return EINVAL;
    void *p = malloc(n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *memalign(size_t alignment, size_t n)
{
    return aligned_alloc(alignment, n);
}

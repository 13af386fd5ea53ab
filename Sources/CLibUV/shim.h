// Helpers for the parts of libuv that Swift cannot import directly: the handle "subclass" casts that C
// does implicitly, macros, and union members. Everything here is `static inline`: no code of its own.
#ifndef CLIBUV_SHIM_H
#define CLIBUV_SHIM_H

#include <uv.h>

/// The libuv version this module was compiled against, as `UV_VERSION_HEX` (0x012c02 for 1.44.2).
static inline unsigned int cuv_version_hex(void) { return UV_VERSION_HEX; }

/// Casts a poll watcher to its base handle type.
static inline uv_handle_t *cuv_poll_as_handle(uv_poll_t *h) { return (uv_handle_t *)h; }
/// Casts a prepare handle to its base handle type.
static inline uv_handle_t *cuv_prepare_as_handle(uv_prepare_t *h) { return (uv_handle_t *)h; }
/// Casts a check handle to its base handle type.
static inline uv_handle_t *cuv_check_as_handle(uv_check_t *h) { return (uv_handle_t *)h; }
/// Casts a pipe to its base handle type.
static inline uv_handle_t *cuv_pipe_as_handle(uv_pipe_t *h) { return (uv_handle_t *)h; }
/// Casts a pipe to the stream type that `uv_read_start` takes.
static inline uv_stream_t *cuv_pipe_as_stream(uv_pipe_t *h) { return (uv_stream_t *)h; }

/// Fills one `uv_stdio_container_t` so that the child inherits `parent_fd` (the union member `data.fd`).
static inline void cuv_stdio_inherit_fd(uv_stdio_container_t *c, int parent_fd) {
    c->flags = UV_INHERIT_FD;
    c->data.fd = parent_fd;
}

/// Fills one `uv_stdio_container_t` so that the child gets nothing at that descriptor number.
static inline void cuv_stdio_ignore(uv_stdio_container_t *c) {
    c->flags = UV_IGNORE;
    c->data.fd = -1;
}

/// `UV_EOF`, the status a read callback receives at end of stream.
static inline int cuv_eof(void) { return UV_EOF; }

#endif

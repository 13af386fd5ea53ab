// Small out-of-line C helpers for swift-background-workers. Each exists because the Swift side cannot
// express it safely: a value that must never be cached across an `await` (thread identity), or a libc
// call whose macros or varargs Swift does not import well.
#ifndef CWORKERSUPPORT_H
#define CWORKERSUPPORT_H

#include <stdint.h>
#include <sys/types.h>

/// Marks the calling thread as the thread of the event loop `loop` (or of no loop, with NULL).
/// Stored in a thread-local variable; read back with `cws_current_loop`.
void cws_set_current_loop(const void *loop);

/// The event loop the calling thread runs, or NULL. Out of line on purpose: glibc declares `pthread_self`
/// `const`, which lets an optimiser reuse a value read before an `await` on another thread afterwards.
const void *cws_current_loop(void);

/// The kernel thread id of the calling thread (`gettid`).
pid_t cws_gettid(void);

/// Names the calling thread (at most 15 bytes are kept), for `top -H`, gdb and crash reports.
void cws_set_thread_name(const char *name);

/// Unblocks the `count` signals in `signals` on the calling thread (`pthread_sigmask`). Returns 0 or an errno.
int cws_unblock_signals(const int *signals, int count);

/// Blocks the `count` signals in `signals` on the calling thread. Returns 0 or an errno.
int cws_block_signals(const int *signals, int count);

/// Whether `signal` is blocked on the calling thread: 1 yes, 0 no, -1 on error.
int cws_signal_is_blocked(int signal);

/// Sets the disposition of `signal` to ignore (`SIG_IGN`). Returns 0 or an errno.
int cws_ignore_signal(int signal);

/// Whether `signal`'s disposition is the default action (`SIG_DFL`): 1 yes, 0 no, -1 on error.
int cws_signal_is_default(int signal);

/// Creates a non-blocking, close-on-exec eventfd with counter 0. Returns the descriptor or -errno.
int cws_eventfd(void);

/// Adds one to an eventfd (wakes its poller). Returns 0 or an errno (EAGAIN when the counter is saturated,
/// which still means the poller will wake).
int cws_eventfd_signal(int fd);

/// Reads and resets an eventfd's counter. Returns 0 or an errno (EAGAIN when it was already zero).
int cws_eventfd_drain(int fd);

/// Creates a pipe whose ends are close-on-exec as asked: `fds[0]` reads, `fds[1]` writes.
/// Both ends are created close-on-exec atomically (`pipe2`), then the flag is cleared where not asked,
/// so no other thread's spawn can inherit an end by accident. Returns 0 or an errno.
int cws_pipe(int fds[2], int read_cloexec, int write_cloexec, int nonblocking);

/// Sets or clears close-on-exec on `fd`. Returns 0 or an errno.
int cws_set_cloexec(int fd, int on);

/// Whether `fd` is close-on-exec: 1 yes, 0 no, -1 if it is not open.
int cws_is_cloexec(int fd);

/// Closes `fd`, ignoring EINTR (on Linux the descriptor is released even then). Returns 0 or an errno.
int cws_close(int fd);

#endif

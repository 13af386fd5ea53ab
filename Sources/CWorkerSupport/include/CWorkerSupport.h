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

/// Whether this kernel has `pidfd_open` (Linux 5.3 and later): 1 yes, 0 no. Probed once.
int cws_has_pidfd(void);

/// Starts a child with `posix_spawn` (`posix_spawnp` when `search_path`), the way `uv_spawn` would, and opens a
/// pidfd for it. The child gets an empty signal mask and default dispositions; with `new_session` it calls
/// `setsid`; `cwd` (or NULL) becomes its working directory; `envp` NULL inherits `environ`. Child descriptor
/// `child_fds[i]` receives parent descriptor `parent_fds[i]` (through close-on-exec temporaries, so that the
/// mapping may permute descriptors); standard descriptors not named get `/dev/null`.
/// Returns 0 and sets `*pid_out` and `*pidfd_out` (close-on-exec), or an errno (nothing is left running then).
int cws_spawn(const char *file, char *const argv[], char *const envp[], const char *cwd, int new_session,
              int search_path, const int *child_fds, const int *parent_fds, int fd_count, pid_t *pid_out,
              int *pidfd_out);

/// Creates an anonymous shared-memory file of `size` bytes, zero-filled, close-on-exec, mode 0600, and sealed
/// against shrinking, growing and further seals (`memfd_create`, named `name` in /proc/PID/fd). Returns the
/// descriptor or -errno.
int cws_memfd(const char *name, uint64_t size);

/// Creates a close-on-exec memfd of mode 0600 holding `length` bytes of `bytes`, sealed against every change
/// (writes, shrinking, growing, further seals): a secret handed to a worker as a descriptor, never through its
/// environment or command line. Returns the descriptor or -errno.
int cws_memfd_sealed(const char *name, const void *bytes, size_t length);

/// The credentials of the peer of connected Unix socket `fd` (`SO_PEERCRED`). Returns 0 or an errno.
int cws_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

/// Connects a new close-on-exec, non-blocking Unix stream socket to `path`. Returns the descriptor, or -errno
/// (-ENAMETOOLONG for a path longer than `sun_path`; -ECONNREFUSED for a socket nobody listens on; -EAGAIN when
/// the listener's backlog is full).
int cws_unix_connect(const char *path);

/// Makes SIGPIPE ignored in this process unless someone installed a handler: a write to a socket whose peer
/// went away then fails with EPIPE instead of ending the process. Children get default dispositions anyway
/// (both spawn paths reset them). Returns 0 or an errno.
int cws_ignore_sigpipe(void);

/// Whether process `pid`'s groups (`/proc/pid/status`: its real, effective and supplementary groups) contain
/// `gid`: 1, 0, or -errno when the process is gone or cannot be read.
int cws_process_in_group(pid_t pid, gid_t gid);

/// Waits up to `timeout_ms` for process `pid` (any process, not only a child) to end, through a pidfd.
/// Returns 1 when it ended (or no longer exists), 0 on timeout, or -errno.
int cws_wait_gone(pid_t pid, int timeout_ms);

/// Reaps `pid` if it has exited (`waitpid(pid, WNOHANG)`). Returns 1 and sets `*exit_code` (or `*signal`,
/// with `*exit_code` -1) when reaped, 0 when it still runs, or -errno.
int cws_reap(pid_t pid, int *exit_code, int *signal);

/// Marks every descriptor from `first` up that is not close-on-exec as close-on-exec, and lists them in `marked`
/// (at most `capacity`), so that a `fork` + `exec` that cannot close them (`uv_spawn`) does not pass them on.
/// Returns how many were marked, or -errno. Undo with `cws_unmark_cloexec`.
int cws_mark_inheritable_cloexec(int first, int *marked, int capacity);

/// Clears close-on-exec again on the `count` descriptors of `marked`.
void cws_unmark_cloexec(const int *marked, int count);

/// Starts a guardian: a child of this process (forked, no exec; it runs only async-signal-safe C code) in a
/// session of its own, that ignores the signals a supervisor's process or group may get and reads 8-byte
/// messages (`cws_guardian_send`) from a pipe: the process groups to kill. When the pipe reaches end of file,
/// because every holder of its write end is gone (this process died, by any means, or closed it), the guardian
/// sends SIGKILL to every group it holds (at most `capacity`) and exits. `title_area` and `title_length` (or
/// NULL and 0) are this process's argv strings, which the guardian overwrites in its own copy so that its command
/// line reads `bgworker-guard`. Returns 0 and sets the guardian's pid, a pidfd for it, and the pipe's write end
/// (close-on-exec), or an errno.
int cws_guardian_start(int capacity, char *title_area, size_t title_length, pid_t *pid_out, int *pidfd_out,
                       int *control_out);

/// Tells the guardian to hold (`add` 1) or forget (`add` 0) process group `group`. Returns 0 or an errno.
int cws_guardian_send(int control, int add, pid_t group);

/// What the worker watcher reports to its callback.
enum {
    /// SIGTERM arrived.
    CWS_WATCH_TERMINATE = 1,
    /// SIGHUP arrived.
    CWS_WATCH_RELOAD = 2,
    /// The supervisor-alive descriptor reached end of file (or failed): the supervisor is gone.
    CWS_WATCH_SUPERVISOR_GONE = 3,
    /// `grace_ms` after CWS_WATCH_SUPERVISOR_GONE: time to exit.
    CWS_WATCH_DEADLINE = 4,
    /// SIGUSR1 arrived: a notification ("something changed, re-read the status").
    CWS_WATCH_NOTIFY = 5,
};

/// Called on the watcher's thread for each event; must not block for long.
typedef void (*cws_watch_callback)(int event, void *context);

/// Starts a worker process's watcher, once per process: SIGTERM, SIGHUP and SIGUSR1 handlers that only write the
/// signal's number to a close-on-exec pipe (async-signal-safe), a SIGQUIT handler that calls `_exit(2)`, and
/// one small thread that polls that pipe and `alive_fd` and calls `callback` (`alive_fd` < 0: not watched).
/// The thread blocks every other signal and takes SIGTERM, SIGHUP, SIGQUIT and SIGUSR1, so they have a thread to land
/// on whatever the other threads block. Returns 0, or an errno (nothing installed then).
int cws_worker_watch_start(int alive_fd, int grace_ms, cws_watch_callback callback, void *context);

/// What `cws_main_wait` found.
enum {
    /// The wake-up eventfd was written (now drained).
    CWS_MAIN_WAKE = 1,
    /// Dispatch's main queue has work: call `cws_main_queue_drain` on the main thread.
    CWS_MAIN_QUEUE = 2,
};

/// On the main thread: waits until `wake_fd` (a `cws_eventfd`) is written or Dispatch's main queue has work
/// (its own eventfd), drains what was ready, and returns which (CWS_MAIN_WAKE | CWS_MAIN_QUEUE), or a negative
/// errno.
int cws_main_wait(int wake_fd);

/// On the main thread: runs the jobs on Dispatch's main queue (the main actor's, on Linux).
void cws_main_queue_drain(void);

/// The argument that makes a binary linking this library a fork server (argv[1]; argv[2] is the number of its
/// socket descriptor). See ForkServer.c for why and how it forks.
#define CWS_FORK_SERVER_MARKER "--bgworker-fork-server"

/// The most descriptors a fork request can pass to a worker.
#define CWS_FORK_SERVER_MAX_FDS 16

/// A close-on-exec `SOCK_SEQPACKET` socket pair for a fork server. Returns 0 or an errno.
int cws_fork_server_socketpair(int fds[2]);

/// Reads the fork server's hello within `timeout_ms`: its pid, its thread count, and the reason it cannot fork
/// (an errno: ENOSYS without PR_GET_TID_ADDRESS or on another architecture, EDEADLK with more than one thread),
/// or 0. Returns 0, ETIMEDOUT, EPIPE when the server is gone, EPROTONOSUPPORT when it speaks another version of
/// the protocol (a binary built with another version of this package), or EPROTO.
int cws_fork_server_hello(int sock, int timeout_ms, pid_t *pid_out, int *threads_out, int *error_out);

/// Asks the fork server on `sock` for a spare, without waiting: a process forked ahead of need that waits for
/// the one request that makes it a worker (`cws_fork_server_send_worker`). The spare is this process's child
/// (CLONE_PARENT). The server first loads the shared library `preload` (or NULL) into itself, if it has not yet,
/// so that this spare and every later one has it loaded; it ends if that started a thread (the answer is then
/// EDEADLK). Returns 0 or an errno (EPIPE when the server is gone).
int cws_fork_server_request_spare(int sock, uint64_t id, const char *preload);

/// Reads the fork server's answer to a spare request within `timeout_ms` (0: only one already there). Returns 0
/// and sets the request's id, the spare's pid, a pidfd for it and this process's end of the spare's socket (both
/// close-on-exec); or an errno: the server's for that request (`*id_out` set; EDEADLK: it has more than one
/// thread; EAGAIN, ENOMEM, EMFILE: transient), EMFILE when this process had no room for the spare's descriptors,
/// ETIMEDOUT, EPIPE when the server is gone, EPROTO. With `*pid_out` > 0 on failure (EMFILE, EPROTO), a spare
/// was made but cannot be used: it was sent SIGKILL; reap it. `*threads_out` gets the
/// server's thread count when it answered.
int cws_fork_server_read_spare(int sock, int timeout_ms, uint64_t *id_out, pid_t *pid_out, int *pidfd_out,
                               int *spare_socket_out, int *threads_out);

/// Sends a spare (its socket from `cws_fork_server_read_spare`) the worker it becomes, without waiting: `argv`,
/// the environment `envp`, its own session with `new_session`, and child descriptor `child_fds[i]` for parent
/// descriptor `parent_fds[i]` (standard descriptors not named get /dev/null; nothing else is open). Returns 0, or
/// an errno: EPIPE when the spare is gone, E2BIG for a request over 256 KiB.
int cws_fork_server_send_worker(int spare_socket, uint64_t id, char *const argv[], char *const envp[], int new_session,
                                const int *child_fds, const int *parent_fds, int fd_count);

/// After the fork server was stopped: reads its remaining replies until end of file (or `timeout_ms` without
/// one), sends SIGKILL to every spare they name, and lists them (at most `capacity`) with their pidfds, for the
/// caller to reap. Returns how many.
int cws_fork_server_drain(int sock, int timeout_ms, pid_t *pids, int *pidfds, int capacity);

#endif

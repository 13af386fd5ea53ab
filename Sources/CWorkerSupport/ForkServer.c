// The fork server ("zygote"): a process started from a supervisor's own binary that stops in an ELF
// constructor, before `main` and before anything of Swift, Dispatch or Foundation has run, and forks workers, so
// that a worker skips the loader and the libraries' start-up that an exec pays again. It was started with
// LD_BIND_NOW (every symbol bound once, here, not lazily in each worker), and it has the Swift worker runtime make
// its type metadata before it serves (bgw_fork_server_prepare_runtime), so its workers inherit both.
//
// It forks ahead of need: each request from the supervisor asks for a *spare*, a fork that waits on a socket of
// its own (passed to the supervisor with its pidfd) for the one request that makes it a worker. The supervisor
// sends that request straight to the spare when a worker starts, so no fork lies between a registration and its
// worker, and asks for the next spare at once.
//
// Why forking is safe here, and what would break it:
// - The server has exactly one thread. It runs only this file's C code, entered from an ELF constructor, so no
//   Swift concurrency, Dispatch or other thread has been started. A fork of a process with more threads copies
//   only the calling one, and a lock another thread held (malloc's, the Swift runtime's, Dispatch's) stays held
//   forever in the child. The server counts its threads (/proc/self/task) when it starts, after every shared
//   library's constructor has run, and refuses to serve with more than one: a library constructor or a preload
//   that starts a thread is caught there. After that it runs only the loop below, which starts none.
// - The spare is created with `clone(CLONE_PARENT)`: its parent is the supervisor, not the server, so the
//   supervisor reaps it by pid through a pidfd (CLONE_PIDFD, passed back with SCM_RIGHTS) like any child, as a
//   spare that dies unused and as the worker it becomes, and every rule of the supervisor applies unchanged.
//   glibc has no fork with CLONE_PARENT, so the raw system call is used and this file does in the child what
//   glibc's fork does there: the kernel writes the child's thread id into glibc's thread descriptor
//   (CLONE_CHILD_SETTID at the address glibc registered with set_tid_address, read back with
//   PR_GET_TID_ADDRESS), and the robust-futex list is registered again. glibc's fork handlers do
//   not run; none is needed because the server holds no lock and has called nothing that keeps per-process state
//   (arc4random, stdio buffers) when it forks.
// - A spare is a copy of the server (one thread, no lock held) until its request comes; it then does what the
//   supervisor's exec path gives a worker: its own session, exactly the descriptors
//   sent with the request (through SCM_RIGHTS) at their numbers and nothing else, default signal dispositions and
//   an empty mask, the worker's environment and arguments (`CommandLine.arguments` through the standard library's
//   override), and returns from the constructor into the binary's `main`, where `BuiltinWorkers.runIfRequested`
//   takes over as after an exec. Until it has made its session the supervisor signals it alone (it has no
//   group yet, and has started nothing).
// What a fork shares that an exec would not: the address-space layout, the stack-protector canary and the Swift
// hashing seed of the server, which every worker forked from it has in common.
#define _GNU_SOURCE
#include "CWorkerSupport.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef PR_GET_TID_ADDRESS
#define PR_GET_TID_ADDRESS 40
#endif

extern char **environ;

// The standard library's override of `CommandLine.arguments` (weak: a binary without Swift never needs it).
extern void _swift_stdlib_overrideUnsafeArgvArgc(char **argv, int argc) __attribute__((weak));

// BackgroundWorkerRuntime's preparation of a fork server (ForkServerPreparation.swift; weak: a binary without it
// serves without it).
extern void bgw_fork_server_prepare_runtime(void) __attribute__((weak));

#define CWS_FORK_MAGIC 0x46574742u  // "BGWF"
#define CWS_FORK_VERSION 2u
#define CWS_FORK_MAX_MESSAGE (256 * 1024)

// What a request asks for: of the server, a spare (a process forked ahead of need, which waits for the one request
// that makes it a worker); of a spare, to become this worker.
enum { CWS_FORK_KIND_WORKER = 0, CWS_FORK_KIND_SPARE = 1 };

struct cws_fork_request {
    uint32_t magic;
    uint32_t version;
    uint64_t id;
    uint32_t kind;  // CWS_FORK_KIND_SPARE (to the server) or CWS_FORK_KIND_WORKER (to a spare)
    uint32_t argc;
    uint32_t envc;
    uint32_t fd_count;
    uint32_t new_session;
    uint32_t has_preload;  // spare requests: 1 when a library path follows, to load in the server before forking
    int32_t child_fds[CWS_FORK_SERVER_MAX_FDS];
    uint32_t strings_length;  // argv, the environment, then the library to preload, each NUL-terminated
};

// The server's answer to a spare request (SCM_RIGHTS: the spare's pidfd, then the supervisor's end of the spare's
// socket), or its hello.
struct cws_fork_reply {
    uint32_t magic;
    uint32_t version;
    uint64_t id;  // 0: the hello
    int32_t pid;  // the spare's pid; for the hello, the server's
    int32_t error;  // an errno, or 0
    int32_t threads;  // the server's threads when it answered
};

static int count_threads(void) {
    DIR *tasks = opendir("/proc/self/task");
    if (tasks == NULL) return -errno;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(tasks)) != NULL) {
        if (entry->d_name[0] != '.') count++;
    }
    closedir(tasks);
    return count;
}

// Room for the most descriptors any message of this protocol passes.
union cws_fork_control {
    char buffer[CMSG_SPACE(sizeof(int) * CWS_FORK_SERVER_MAX_FDS)];
    struct cmsghdr align;
};

/// Passes `count` descriptors with `message` (one SCM_RIGHTS header in `control`); none when `count` is 0.
static void attach_descriptors(struct msghdr *message, union cws_fork_control *control, const int *fds, int count) {
    if (count <= 0) return;
    memset(control, 0, sizeof *control);
    message->msg_control = control->buffer;
    message->msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count);
    struct cmsghdr *header = CMSG_FIRSTHDR(message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
    memcpy(CMSG_DATA(header), fds, sizeof(int) * (size_t)count);
}

static int send_reply(int sock, uint64_t id, int32_t pid, int32_t error, const int *passed, int passed_count, int threads) {
    struct cws_fork_reply reply = {CWS_FORK_MAGIC, CWS_FORK_VERSION, id, pid, error, threads};
    struct iovec vector = {&reply, sizeof reply};
    union cws_fork_control control;
    struct msghdr message = {0};
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    attach_descriptors(&message, &control, passed, passed_count);
    for (;;) {
        if (sendmsg(sock, &message, MSG_NOSIGNAL) >= 0) return 0;
        if (errno != EINTR) return errno;
    }
}

static void close_all(const int *fds, int count) {
    for (int i = 0; i < count; i++) close(fds[i]);
}

// The memory the kernel shows as this process's command line (/proc/PID/cmdline, what `ps` prints): the
// server's own argument strings, and the environment strings right after them, which a worker no longer uses (it
// gets an environment of its own). Found by the constructor; NULL when they are not where the kernel put them.
static char *title_area = NULL;
static size_t title_arguments_length = 0;  // the argument strings alone
static size_t title_length = 0;  // with the environment strings that follow them

/// Finds the argument and environment strings' memory (contiguous, as the kernel lays them out at exec).
static void find_title_area(int argc, char **argv, char **envp) {
    if (argc <= 0 || argv[0] == NULL) return;
    char *end = argv[0];
    for (int i = 0; i < argc; i++) {
        if (argv[i] != end) return;  // not contiguous: leave the command line alone
        end += strlen(argv[i]) + 1;
    }
    title_area = argv[0];
    title_arguments_length = (size_t)(end - argv[0]);
    for (char **variable = envp; variable != NULL && *variable != NULL && *variable == end; variable++) {
        end += strlen(*variable) + 1;
    }
    title_length = (size_t)(end - argv[0]);
}

/// In the new worker, after it has its own environment: its arguments as its command line, so that `ps` shows
/// what it shows for an exec'd worker (as PostgreSQL's backends rewrite theirs). NUL-separated, as an exec lays
/// them out, when they fit in the server's argument strings; otherwise one string separated by spaces over the
/// environment's memory too (the kernel reads past the arguments when their last byte is not NUL), cut at its
/// end.
static void set_process_title(char *const *argv, uint32_t argc) {
    if (title_area == NULL || title_arguments_length == 0) return;
    size_t needed = 0;
    for (uint32_t i = 0; i < argc; i++) needed += strlen(argv[i]) + 1;
    char *cursor = title_area;
    char *end = title_area + title_length;
    if (needed <= title_arguments_length) {
        for (uint32_t i = 0; i < argc; i++) {
            size_t n = strlen(argv[i]) + 1;
            memcpy(cursor, argv[i], n);
            cursor += n;
        }
    } else {
        for (uint32_t i = 0; i < argc && cursor < end - 1; i++) {
            if (i > 0) *cursor++ = ' ';
            size_t n = strlen(argv[i]);
            size_t room = (size_t)(end - 1 - cursor);
            if (n > room) n = room;
            memcpy(cursor, argv[i], n);
            cursor += n;
        }
    }
    memset(cursor, 0, (size_t)(end - cursor));
}

/// In the new worker: the descriptors at their numbers and nothing else, its session, default signals, its
/// environment and arguments. Returns 0, or an errno (the child then exits 127).
static int become_worker(const struct cws_fork_request *request, const char *strings, const int *fds) {
    int count = (int)request->fd_count;
    int highest = 2;
    for (int i = 0; i < count; i++) {
        if (request->child_fds[i] > highest) highest = request->child_fds[i];
    }
    // Out of the way first (a descriptor may have to move onto another's number), then into place; dup2 clears
    // close-on-exec on the target, which matters to the worker's own children only.
    int moved[CWS_FORK_SERVER_MAX_FDS];
    for (int i = 0; i < count; i++) {
        moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, highest + 1);
        if (moved[i] < 0) return errno;
    }
    for (int i = 0; i < count; i++) {
        if (dup2(moved[i], request->child_fds[i]) < 0) return errno;
    }
    for (int fd = 0; fd <= highest; fd++) {
        int named = 0;
        for (int i = 0; i < count; i++) named |= request->child_fds[i] == fd;
        if (named) continue;
        if (fd <= 2) {
            int null = open("/dev/null", O_RDWR);
            if (null < 0) return errno;
            if (null != fd) {
                if (dup2(null, fd) < 0) return errno;
                close(null);
            }
        } else {
            close(fd);
        }
    }
    if (syscall(SYS_close_range, (unsigned)highest + 1, ~0u, 0) != 0) {
        long limit = sysconf(_SC_OPEN_MAX);
        for (long fd = highest + 1; fd < (limit > 0 ? limit : 65536); fd++) close((int)fd);
    }
    if (request->new_session && setsid() < 0) return errno;
    // Signal dispositions and mask: the server's, reset once when it started (reset_signals), never changed since.

    char **argv = calloc(request->argc + 1, sizeof(char *));
    char **envp = calloc(request->envc + 1, sizeof(char *));
    if (argv == NULL || envp == NULL) return ENOMEM;
    const char *cursor = strings;
    for (uint32_t i = 0; i < request->argc; i++) {
        argv[i] = (char *)cursor;
        cursor += strlen(cursor) + 1;
    }
    for (uint32_t i = 0; i < request->envc; i++) {
        envp[i] = (char *)cursor;
        cursor += strlen(cursor) + 1;
    }
    environ = envp;
    if (_swift_stdlib_overrideUnsafeArgvArgc != NULL) _swift_stdlib_overrideUnsafeArgvArgc(argv, (int)request->argc);
    set_process_title(argv, request->argc);
    // The name `ps` shows: argv[0] as an exec would give it.
    prctl(PR_SET_NAME, (unsigned long)argv[0], 0, 0, 0);
    return 0;
}

/// Default dispositions and an empty mask, as an exec'd worker gets them; done once in the server, whose workers
/// inherit them (it installs no handler and blocks nothing afterwards).
static void reset_signals(void) {
    struct sigaction fallback = {0};
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    for (int signal = 1; signal < NSIG; signal++) {
        if (signal == SIGKILL || signal == SIGSTOP) continue;
        sigaction(signal, &fallback, NULL);  // fails harmlessly for numbers glibc reserves
    }
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
}

/// Checks that `length` bytes hold `argc + envc` NUL-terminated strings.
static int strings_are_complete(const char *strings, uint32_t length, uint32_t count) {
    uint32_t offset = 0;
    for (uint32_t i = 0; i < count; i++) {
        const char *end = memchr(strings + offset, 0, length - offset);
        if (end == NULL) return 0;
        offset = (uint32_t)(end - strings) + 1;
        if (offset > length) return 0;
    }
    return 1;
}

/// Receives one message of up to `length` bytes into `buffer` with `extra_flags` (MSG_DONTWAIT), and the
/// descriptors sent with it, close-on-exec: up to `capacity` into `fds`, the rest closed. `*flags` gets the
/// message's flags (MSG_TRUNC, MSG_CTRUNC: descriptors dropped, this process's table being full, or too many).
/// Returns recvmsg's result (EINTR retried). Used on both sides: by the server and spares for requests, by the
/// supervisor for replies.
static ssize_t receive_message(int sock, void *buffer, size_t length, int extra_flags, int *fds, int capacity,
                               int *fd_count, int *flags) {
    union cws_fork_control control;
    struct iovec vector = {buffer, length};
    struct msghdr message = {0};
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof control.buffer;
    ssize_t received;
    do {
        received = recvmsg(sock, &message, MSG_CMSG_CLOEXEC | extra_flags);
    } while (received < 0 && errno == EINTR);
    *fd_count = 0;
    *flags = received > 0 ? message.msg_flags : 0;
    if (received <= 0) return received;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
            if (*fd_count < capacity) {
                fds[(*fd_count)++] = fd;
            } else {
                close(fd);
                *flags |= MSG_CTRUNC;
            }
        }
    }
    return received;
}

/// Receives one request and the descriptors sent with it (close-on-exec until a worker's dup2 puts them in place).
static ssize_t receive_request(int sock, char *buffer, int *fds, int *fd_count, int *flags) {
    return receive_message(sock, buffer, CWS_FORK_MAX_MESSAGE, 0, fds, CWS_FORK_SERVER_MAX_FDS, fd_count, flags);
}

/// What is wrong with a request of `kind` received in `received` bytes with `fd_count` descriptors: EPROTO for a
/// malformed one, EINVAL for a descriptor number out of range, or 0.
static int request_problem(const struct cws_fork_request *request, ssize_t received, int flags, int fd_count, uint32_t kind) {
    if ((size_t)received < sizeof *request || request->magic != CWS_FORK_MAGIC || request->version != CWS_FORK_VERSION ||
        request->kind != kind || (flags & (MSG_TRUNC | MSG_CTRUNC)) || request->fd_count != (uint32_t)fd_count ||
        request->strings_length != (uint32_t)(received - (ssize_t)sizeof *request) || request->has_preload > 1 ||
        !strings_are_complete((const char *)(request + 1), request->strings_length,
                              request->argc + request->envc + request->has_preload)) {
        return EPROTO;
    }
    if (kind == CWS_FORK_KIND_WORKER && (request->argc == 0 || request->has_preload)) return EPROTO;
    if (kind == CWS_FORK_KIND_SPARE && (request->argc != 0 || request->envc != 0 || fd_count != 0)) return EPROTO;
    for (int i = 0; i < fd_count; i++) {
        if (request->child_fds[i] < 0 || request->child_fds[i] > 1023) return EINVAL;
    }
    return 0;
}

/// A spare: waits on its own socket for the one request that makes it a worker, then becomes that worker and
/// returns 0 (into `main`). Ends, without a trace, when the supervisor closes the socket without a request (it
/// stops, or no longer needs this spare), and with 127 on a malformed request. Until then it is a copy of the
/// server: one thread, nothing of a worker's, in the server's process group (whose guardian kills it with the
/// server's group).
static int be_spare(int sock, char *buffer) {
    int fds[CWS_FORK_SERVER_MAX_FDS];
    int fd_count = 0;
    int flags = 0;
    ssize_t received = receive_request(sock, buffer, fds, &fd_count, &flags);
    if (received <= 0) _exit(0);
    const struct cws_fork_request *request = (const struct cws_fork_request *)buffer;
    if (request_problem(request, received, flags, fd_count, CWS_FORK_KIND_WORKER) != 0) _exit(127);
    close(sock);
    // The request's buffer stays allocated: the worker's argv and environ point into it.
    if (become_worker(request, buffer + sizeof *request, fds) != 0) _exit(127);
    return 0;
}

/// The server's loop: forks a spare on each request and passes it to the supervisor, which sends the spare its
/// worker directly, so that no fork is on the way from a registration to its worker. Returns only in a spare
/// that became a worker (0), which then goes on into `main`.
static int serve(int sock) {
    int *tid_address = NULL;
    void *robust_head = NULL;
    size_t robust_length = 0;
    int setup_error = 0;
    if (prctl(PR_GET_TID_ADDRESS, (unsigned long)&tid_address, 0, 0, 0) != 0 || tid_address == NULL) {
        setup_error = errno != 0 ? errno : ENOSYS;
    } else if (*tid_address != (int)syscall(SYS_gettid)) {
        setup_error = EPROTO;  // not glibc's thread descriptor: forking would leave the child's wrong
    }
    if (syscall(SYS_get_robust_list, 0, &robust_head, &robust_length) != 0) robust_head = NULL;
#if !defined(__x86_64__) && !defined(__aarch64__)
    setup_error = ENOSYS;
#endif
    reset_signals();
    // The Swift worker runtime's type metadata, made once here instead of in every worker (it starts no thread:
    // counted just below).
    if (bgw_fork_server_prepare_runtime != NULL) bgw_fork_server_prepare_runtime();
    int threads = count_threads();
    if (setup_error == 0 && threads != 1) setup_error = EDEADLK;
    send_reply(sock, 0, (int32_t)getpid(), setup_error, NULL, 0, threads);
    if (setup_error != 0) _exit(3);

    char *buffer = malloc(CWS_FORK_MAX_MESSAGE);
    if (buffer == NULL) _exit(3);
    for (;;) {
        int fds[CWS_FORK_SERVER_MAX_FDS];
        int fd_count = 0;
        int flags = 0;
        ssize_t received = receive_request(sock, buffer, fds, &fd_count, &flags);
        if (received <= 0) _exit(0);  // the supervisor closed its end, or died
        const struct cws_fork_request *request = (const struct cws_fork_request *)buffer;
        uint64_t id = received >= (ssize_t)sizeof *request ? request->id : 0;
        int problem = request_problem(request, received, flags, fd_count, CWS_FORK_KIND_SPARE);
        close_all(fds, fd_count);  // a spare request passes none
        if (problem != 0) {
            send_reply(sock, id, -1, problem, NULL, 0, threads);
            continue;
        }
        if (request->has_preload) {
            // A library worker's library, loaded here once so that each spare made from now on has it loaded. Its
            // constructors run in this process: one that starts a thread makes forking unsafe from now on, so the
            // server says so and ends (the supervisor then execs). A library that cannot be loaded is left to the
            // worker, which reports why as an exec'd one does.
            const char *library = buffer + sizeof *request;
            if (dlopen(library, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD) == NULL && dlopen(library, RTLD_NOW | RTLD_LOCAL) != NULL) {
                threads = count_threads();
                if (threads != 1) {
                    send_reply(sock, id, -1, EDEADLK, NULL, 0, threads);
                    _exit(4);
                }
            }
        }
        int pair[2];
        int pair_error = cws_fork_server_socketpair(pair);
        if (pair_error != 0) {
            send_reply(sock, id, -1, pair_error, NULL, 0, threads);
            continue;
        }

        int pidfd = -1;
        long pid;
#if defined(__x86_64__)
        pid = syscall(SYS_clone, CLONE_PARENT | CLONE_PIDFD | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, NULL,
                      &pidfd, tid_address, 0);
#elif defined(__aarch64__)
        pid = syscall(SYS_clone, CLONE_PARENT | CLONE_PIDFD | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, NULL,
                      &pidfd, 0, tid_address);
#else
        pid = -1;
        errno = ENOSYS;
#endif
        if (pid == 0) {
            if (robust_head != NULL) syscall(SYS_set_robust_list, robust_head, robust_length);
            close(sock);
            close(pair[0]);
            return be_spare(pair[1], buffer);
        }
        int error = pid < 0 ? errno : 0;
        close(pair[1]);
        int passed[2] = {pidfd, pair[0]};
        send_reply(sock, id, pid < 0 ? -1 : (int32_t)pid, error, passed, pid < 0 ? 0 : 2, threads);
        if (pidfd >= 0) close(pidfd);
        close(pair[0]);
    }
}

__attribute__((constructor)) static void cws_fork_server_entry(int argc, char **argv, char **envp) {
    if (argc < 3 || argv == NULL || argv[1] == NULL || strcmp(argv[1], CWS_FORK_SERVER_MARKER) != 0) return;
    find_title_area(argc, argv, envp);
    char *end = NULL;
    long sock = strtol(argv[2], &end, 10);
    if (end == argv[2] || *end != 0 || sock < 0 || sock > 1023) _exit(2);
    // Every copy of this library in the process has this constructor: one in the executable, and one in each
    // shared library that links it (a library worker's, loaded by the server). glibc hands each the same argv
    // array: taking the marker out of it makes this the only server, and a worker never becomes one.
    argv[1] = (char *)"--bgworker-fork-server-started";
    serve((int)sock);
}

// MARK: - The supervisor's side

int cws_fork_server_socketpair(int fds[2]) {
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) return errno;
    return 0;
}

/// Reads one reply (and the descriptors passed with it: a spare's pidfd and socket) within `timeout_ms`. Returns 0,
/// ETIMEDOUT, EPIPE when the server is gone, EPROTO for a malformed reply, EPROTONOSUPPORT for one of another
/// version of the protocol, EMFILE (the reply read, its descriptors closed) when they did not fit into this
/// process's descriptor table, or another errno.
static int read_reply(int sock, int timeout_ms, struct cws_fork_reply *reply, int passed[2]) {
    passed[0] = -1;
    passed[1] = -1;
    struct pollfd entry = {sock, POLLIN, 0};
    for (;;) {
        int ready = poll(&entry, 1, timeout_ms);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) return errno;
        if (ready == 0) return ETIMEDOUT;
        break;
    }
    int count = 0;
    int flags = 0;
    ssize_t received = receive_message(sock, reply, sizeof *reply, MSG_DONTWAIT, passed, 2, &count, &flags);
    if (received < 0 && errno == EAGAIN) return ETIMEDOUT;  // read by someone else first
    if (received < 0) return errno == ECONNRESET ? EPIPE : errno;
    if (received == 0) return EPIPE;
    int problem = 0;
    if ((size_t)received != sizeof *reply || reply->magic != CWS_FORK_MAGIC || reply->version != CWS_FORK_VERSION) {
        // A server built from another version of this file: its magic is right, its version not.
        problem = (size_t)received >= 2 * sizeof(uint32_t) && reply->magic == CWS_FORK_MAGIC ? EPROTONOSUPPORT : EPROTO;
    } else if (flags & MSG_CTRUNC) {
        // The descriptors passed did not all fit: this process's table is full (the kernel dropped the rest).
        problem = EMFILE;
    }
    if (problem != 0) {
        for (int i = 0; i < 2; i++) {
            if (passed[i] >= 0) close(passed[i]);
            passed[i] = -1;
        }
    }
    return problem;
}

int cws_fork_server_hello(int sock, int timeout_ms, pid_t *pid_out, int *threads_out, int *error_out) {
    struct cws_fork_reply reply;
    int passed[2];
    int err = read_reply(sock, timeout_ms, &reply, passed);
    for (int i = 0; i < 2; i++) {
        if (passed[i] >= 0) close(passed[i]);
    }
    if (err != 0) return err;
    if (reply.id != 0) return EPROTO;
    *pid_out = reply.pid;
    *threads_out = reply.threads;
    *error_out = reply.error;
    return 0;
}

/// Sends a request of `kind` on `sock` without waiting (SOCK_SEQPACKET: one message, whole or not at all).
static int send_request(int sock, uint32_t kind, uint64_t id, char *const argv[], char *const envp[], const char *preload,
                        int new_session, const int *child_fds, const int *parent_fds, int fd_count) {
    if (fd_count < 0 || fd_count > CWS_FORK_SERVER_MAX_FDS) return EINVAL;
    struct cws_fork_request request = {0};
    request.magic = CWS_FORK_MAGIC;
    request.version = CWS_FORK_VERSION;
    request.id = id;
    request.kind = kind;
    request.fd_count = (uint32_t)fd_count;
    request.new_session = new_session ? 1 : 0;
    size_t length = 0;
    if (argv != NULL) {
        for (char *const *arg = argv; *arg != NULL; arg++) {
            length += strlen(*arg) + 1;
            request.argc++;
        }
    }
    if (envp != NULL) {
        for (char *const *variable = envp; *variable != NULL; variable++) {
            length += strlen(*variable) + 1;
            request.envc++;
        }
    }
    if (preload != NULL) {
        length += strlen(preload) + 1;
        request.has_preload = 1;
    }
    if (length + sizeof request > CWS_FORK_MAX_MESSAGE) return E2BIG;
    request.strings_length = (uint32_t)length;
    for (int i = 0; i < fd_count; i++) request.child_fds[i] = child_fds[i];
    char *message_buffer = malloc(sizeof request + length);
    if (message_buffer == NULL) return ENOMEM;
    memcpy(message_buffer, &request, sizeof request);
    char *cursor = message_buffer + sizeof request;
    for (uint32_t i = 0; i < request.argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        memcpy(cursor, argv[i], n);
        cursor += n;
    }
    for (uint32_t i = 0; i < request.envc; i++) {
        size_t n = strlen(envp[i]) + 1;
        memcpy(cursor, envp[i], n);
        cursor += n;
    }
    if (preload != NULL) memcpy(cursor, preload, strlen(preload) + 1);
    union cws_fork_control control;
    struct iovec vector = {message_buffer, sizeof request + length};
    struct msghdr message = {0};
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    attach_descriptors(&message, &control, parent_fds, fd_count);
    ssize_t sent;
    do {
        sent = sendmsg(sock, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (sent < 0 && errno == EINTR);
    int send_error = sent < 0 ? errno : 0;
    free(message_buffer);
    if (send_error != 0) return send_error == ECONNRESET || send_error == ENOTCONN ? EPIPE : send_error;
    return 0;
}

int cws_fork_server_request_spare(int sock, uint64_t id, const char *preload) {
    return send_request(sock, CWS_FORK_KIND_SPARE, id, NULL, NULL, preload, 0, NULL, NULL, 0);
}

int cws_fork_server_read_spare(int sock, int timeout_ms, uint64_t *id_out, pid_t *pid_out, int *pidfd_out,
                               int *spare_socket_out, int *threads_out) {
    *id_out = 0;
    *pid_out = -1;
    *pidfd_out = -1;
    *spare_socket_out = -1;
    struct cws_fork_reply reply;
    int passed[2];
    int err = read_reply(sock, timeout_ms, &reply, passed);
    if (err != 0 && err != EMFILE) return err;  // EMFILE: read, but its descriptors were lost on the way in
    *id_out = reply.id;
    *threads_out = reply.threads;
    if (err == 0 && reply.id != 0 && reply.error == 0 && reply.pid > 0 && passed[0] >= 0 && passed[1] >= 0) {
        *pid_out = reply.pid;
        *pidfd_out = passed[0];
        *spare_socket_out = passed[1];
        return 0;
    }
    for (int i = 0; i < 2; i++) {
        if (passed[i] >= 0) close(passed[i]);
    }
    if (reply.id == 0) return EPROTO;  // a second hello
    if (reply.error != 0) return reply.error;
    // A spare without its pidfd or socket (EMFILE: no fault of the server's) cannot be used or watched: stopped at
    // once (it is this process's unreaped child, so its pid is its own; the caller reaps it).
    if (reply.pid > 0) {
        kill(reply.pid, SIGKILL);
        *pid_out = reply.pid;
    }
    return err != 0 ? err : EPROTO;
}

int cws_fork_server_send_worker(int spare_socket, uint64_t id, char *const argv[], char *const envp[], int new_session,
                                const int *child_fds, const int *parent_fds, int fd_count) {
    if (argv == NULL || argv[0] == NULL) return EINVAL;
    return send_request(spare_socket, CWS_FORK_KIND_WORKER, id, argv, envp, NULL, new_session, child_fds, parent_fds,
                        fd_count);
}

int cws_fork_server_drain(int sock, int timeout_ms, pid_t *pids, int *pidfds, int capacity) {
    int count = 0;
    for (;;) {
        struct cws_fork_reply reply;
        int passed[2];
        int err = read_reply(sock, timeout_ms, &reply, passed);
        if (err != 0 && err != EMFILE) return count;
        if (passed[1] >= 0) close(passed[1]);
        if (reply.pid > 0 && reply.id != 0) {
            kill(reply.pid, SIGKILL);  // this process's unreaped child: its pid is its own
            if (count < capacity) {
                pids[count] = reply.pid;
                pidfds[count] = passed[0];
                count++;
            } else if (passed[0] >= 0) {
                close(passed[0]);
            }
        } else if (passed[0] >= 0) {
            close(passed[0]);
        }
    }
}

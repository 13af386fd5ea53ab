// The worker runtime's watcher: signals and the supervisor-alive descriptor, without an event loop.
//
// A worker's start cost matters (it is paid on every restart), so this is plain C: two handlers that set a flag
// and write a byte to a pipe, and one thread that polls that pipe and the alive descriptor. No libuv loop, no Swift
// metadata to instantiate before the worker's body runs.
#define _GNU_SOURCE
#include "CWorkerSupport.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int cws_watch_pipe[2] = {-1, -1};
static int cws_watch_alive_fd = -1;
static int cws_watch_grace_ms = 0;
static cws_watch_callback cws_watch_target = NULL;
static void *cws_watch_context = NULL;
static pthread_mutex_t cws_watch_start_lock = PTHREAD_MUTEX_INITIALIZER;
static int cws_watch_started = 0;

// Set by the handlers, taken by the watcher thread: a signal is recorded even when the pipe is full.
static atomic_int cws_watch_terminate_pending = 0;
static atomic_int cws_watch_reload_pending = 0;
static atomic_int cws_watch_notify_pending = 0;

static void cws_watch_handler(int signal_number) {
    int saved = errno;
    if (signal_number == SIGTERM) atomic_store(&cws_watch_terminate_pending, 1);
    if (signal_number == SIGHUP) atomic_store(&cws_watch_reload_pending, 1);
    if (signal_number == SIGUSR1) atomic_store(&cws_watch_notify_pending, 1);
    // A byte only wakes the watcher; a full pipe (EAGAIN) means it is awake already.
    unsigned char byte = (unsigned char)signal_number;
    ssize_t written;
    do {
        written = write(cws_watch_pipe[1], &byte, 1);
    } while (written < 0 && errno == EINTR);
    errno = saved;
}

static void cws_watch_quit_handler(int signal_number) {
    (void)signal_number;
    _exit(2);
}

static void *cws_watch_thread(void *unused) {
    (void)unused;
    // Named from inside: pthread_setname_np on another thread writes /proc/self/task/TID/comm, three syscalls.
    prctl(PR_SET_NAME, "bgworker-watch", 0, 0, 0);
    sigset_t mask;
    sigfillset(&mask);
    sigdelset(&mask, SIGTERM);
    sigdelset(&mask, SIGHUP);
    sigdelset(&mask, SIGQUIT);
    sigdelset(&mask, SIGUSR1);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);

    struct pollfd fds[2] = {
        {.fd = cws_watch_pipe[0], .events = POLLIN},
        {.fd = cws_watch_alive_fd, .events = POLLIN},
    };
    int count = cws_watch_alive_fd >= 0 ? 2 : 1;
    int timeout = -1;
    for (;;) {
        int ready = poll(fds, (nfds_t)count, timeout);
        if (ready < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (ready == 0) {
            // The grace period after the supervisor's death has passed.
            cws_watch_target(CWS_WATCH_DEADLINE, cws_watch_context);
            timeout = -1;
            continue;
        }
        if (fds[0].revents & POLLIN) {
            unsigned char bytes[256];
            while (read(cws_watch_pipe[0], bytes, sizeof bytes) > 0) {
            }
            // Signals coalesce: several SIGHUPs before this point are one reload request. A reload pending with
            // a SIGTERM is reported first, so that it is recorded before anyone can see the termination (the
            // kernel, too, delivers the lower-numbered SIGHUP first when both are pending).
            if (atomic_exchange(&cws_watch_reload_pending, 0)) cws_watch_target(CWS_WATCH_RELOAD, cws_watch_context);
            if (atomic_exchange(&cws_watch_notify_pending, 0)) cws_watch_target(CWS_WATCH_NOTIFY, cws_watch_context);
            if (atomic_exchange(&cws_watch_terminate_pending, 0)) cws_watch_target(CWS_WATCH_TERMINATE, cws_watch_context);
        }
        if (count == 2 && fds[1].revents) {
            char buffer[64];
            ssize_t got = read(cws_watch_alive_fd, buffer, sizeof buffer);
            if (got > 0 || (got < 0 && (errno == EINTR || errno == EAGAIN))) continue;
            // End of file (or an error): nobody holds the write end any more, the supervisor is gone.
            count = 1;
            cws_watch_target(CWS_WATCH_SUPERVISOR_GONE, cws_watch_context);
            timeout = cws_watch_grace_ms;
        }
    }
    return NULL;
}

int cws_worker_watch_start(int alive_fd, int grace_ms, cws_watch_callback callback, void *context) {
    pthread_mutex_lock(&cws_watch_start_lock);
    if (cws_watch_started) {
        pthread_mutex_unlock(&cws_watch_start_lock);
        return EALREADY;
    }
    int pipe_error = cws_pipe(cws_watch_pipe, 1, 1, 1);
    if (pipe_error != 0) {
        pthread_mutex_unlock(&cws_watch_start_lock);
        return pipe_error;
    }
    cws_watch_alive_fd = alive_fd;
    cws_watch_grace_ms = grace_ms;
    cws_watch_target = callback;
    cws_watch_context = context;

    struct sigaction action;
    memset(&action, 0, sizeof action);
    sigfillset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    action.sa_handler = cws_watch_handler;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
    sigaction(SIGUSR1, &action, NULL);
    action.sa_handler = cws_watch_quit_handler;
    sigaction(SIGQUIT, &action, NULL);

    // Start the thread with every signal blocked, so nothing lands on it before it sets its own mask.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 256 * 1024);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int error = pthread_create(&thread, &attributes, cws_watch_thread, NULL);
    pthread_attr_destroy(&attributes);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (error != 0) {
        action.sa_handler = SIG_DFL;
        sigaction(SIGTERM, &action, NULL);
        sigaction(SIGHUP, &action, NULL);
        sigaction(SIGUSR1, &action, NULL);
        sigaction(SIGQUIT, &action, NULL);
        close(cws_watch_pipe[0]);
        close(cws_watch_pipe[1]);
        cws_watch_pipe[0] = cws_watch_pipe[1] = -1;
        pthread_mutex_unlock(&cws_watch_start_lock);
        return error;
    }
    cws_watch_started = 1;
    pthread_mutex_unlock(&cws_watch_start_lock);
    return 0;
}

#define _GNU_SOURCE
#include "CWorkerSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static __thread const void *cws_thread_loop = NULL;

void cws_set_current_loop(const void *loop) { cws_thread_loop = loop; }

const void *cws_current_loop(void) { return cws_thread_loop; }

pid_t cws_gettid(void) { return gettid(); }

void cws_set_thread_name(const char *name) {
    char buffer[16];
    strncpy(buffer, name, sizeof(buffer) - 1);
    buffer[sizeof(buffer) - 1] = '\0';
    (void)pthread_setname_np(pthread_self(), buffer);
}

static int cws_change_mask(int how, const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) {
        if (sigaddset(&set, signals[i]) != 0) return EINVAL;
    }
    return pthread_sigmask(how, &set, NULL);
}

int cws_unblock_signals(const int *signals, int count) { return cws_change_mask(SIG_UNBLOCK, signals, count); }

int cws_block_signals(const int *signals, int count) { return cws_change_mask(SIG_BLOCK, signals, count); }

int cws_signal_is_blocked(int signal) {
    sigset_t current;
    if (pthread_sigmask(SIG_BLOCK, NULL, &current) != 0) return -1;
    return sigismember(&current, signal);
}

int cws_ignore_signal(int signal) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = SIG_IGN;
    sigemptyset(&action.sa_mask);
    return sigaction(signal, &action, NULL) == 0 ? 0 : errno;
}

int cws_signal_is_default(int signal) {
    struct sigaction current;
    if (sigaction(signal, NULL, &current) != 0) return -1;
    return current.sa_handler == SIG_DFL ? 1 : 0;
}

int cws_eventfd(void) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd >= 0 ? fd : -errno;
}

int cws_eventfd_signal(int fd) {
    uint64_t one = 1;
    for (;;) {
        ssize_t n = write(fd, &one, sizeof(one));
        if (n == (ssize_t)sizeof(one)) return 0;
        if (n < 0 && errno == EINTR) continue;
        return n < 0 ? errno : EIO;
    }
}

int cws_eventfd_drain(int fd) {
    uint64_t value;
    for (;;) {
        ssize_t n = read(fd, &value, sizeof(value));
        if (n == (ssize_t)sizeof(value)) return 0;
        if (n < 0 && errno == EINTR) continue;
        return n < 0 ? errno : EIO;
    }
}

int cws_set_cloexec(int fd, int on) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return errno;
    int wanted = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    if (wanted == flags) return 0;
    return fcntl(fd, F_SETFD, wanted) == 0 ? 0 : errno;
}

int cws_is_cloexec(int fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -1;
    return (flags & FD_CLOEXEC) ? 1 : 0;
}

int cws_pipe(int fds[2], int read_cloexec, int write_cloexec, int nonblocking) {
    int flags = O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0);
    if (pipe2(fds, flags) != 0) return errno;
    int err = 0;
    if (!read_cloexec) err = cws_set_cloexec(fds[0], 0);
    if (err == 0 && !write_cloexec) err = cws_set_cloexec(fds[1], 0);
    if (err != 0) {
        close(fds[0]);
        close(fds[1]);
        fds[0] = fds[1] = -1;
    }
    return err;
}

int cws_close(int fd) {
    if (close(fd) == 0) return 0;
    return errno == EINTR ? 0 : errno;
}

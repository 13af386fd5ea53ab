// The worker runtime's main thread: it runs the body's jobs itself (see MainThreadExecutor.swift) and drains
// Dispatch's main queue, which carries the main actor's jobs on Linux, as Foundation's run loop does.
#define _GNU_SOURCE
#include "CWorkerSupport.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>

// libdispatch's run-loop integration (its private.h; exported on Linux, used by CoreFoundation's run loop):
// the main queue's eventfd, written when the main queue gets work, and the call that drains the main queue on
// the main thread.
extern int _dispatch_get_main_queue_handle_4CF(void);
extern void _dispatch_main_queue_callback_4CF(void *msg);

static int cws_main_queue_fd = -1;

int cws_main_wait(int wake_fd) {
    if (cws_main_queue_fd < 0) cws_main_queue_fd = _dispatch_get_main_queue_handle_4CF();
    struct pollfd fds[2] = {
        {.fd = wake_fd, .events = POLLIN, .revents = 0},
        {.fd = cws_main_queue_fd, .events = POLLIN, .revents = 0},
    };
    while (poll(fds, 2, -1) < 0) {
        if (errno != EINTR) return -errno;
    }
    int ready = 0;
    if (fds[0].revents) {
        cws_eventfd_drain(wake_fd);
        ready |= CWS_MAIN_WAKE;
    }
    if (fds[1].revents) {
        cws_eventfd_drain(cws_main_queue_fd);
        ready |= CWS_MAIN_QUEUE;
    }
    return ready;
}

void cws_main_queue_drain(void) { _dispatch_main_queue_callback_4CF(NULL); }

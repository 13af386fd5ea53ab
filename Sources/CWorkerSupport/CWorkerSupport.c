#define _GNU_SOURCE
#include "CWorkerSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdio.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

extern char **environ;

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

int cws_has_pidfd(void) {
    static int probed = -1;
    int known = __atomic_load_n(&probed, __ATOMIC_ACQUIRE);
    if (known >= 0) return known;
    int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    int result = fd >= 0 ? 1 : 0;
    if (fd >= 0) close(fd);
    __atomic_store_n(&probed, result, __ATOMIC_RELEASE);
    return result;
}

int cws_spawn(const char *file, char *const argv[], char *const envp[], const char *cwd, int new_session,
              int search_path, const int *child_fds, const int *parent_fds, int fd_count, pid_t *pid_out,
              int *pidfd_out) {
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_t actions;
    int temporaries[64];
    int temporary_count = 0;
    int err = 0;

    if (fd_count > 64) return EINVAL;
    int max_child = 2;
    for (int i = 0; i < fd_count; i++) {
        if (child_fds[i] > max_child) max_child = child_fds[i];
    }

    if ((err = posix_spawnattr_init(&attributes)) != 0) return err;
    if ((err = posix_spawn_file_actions_init(&actions)) != 0) {
        posix_spawnattr_destroy(&attributes);
        return err;
    }

    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (new_session) flags |= POSIX_SPAWN_SETSID;
    err = posix_spawnattr_setflags(&attributes, flags);
    if (err == 0) err = posix_spawnattr_setsigmask(&attributes, &empty);
    if (err == 0) err = posix_spawnattr_setsigdefault(&attributes, &all);

    // Copy every source above every target first, so that a mapping like 3<-4, 4<-3 cannot clobber itself.
    // The copies are close-on-exec: the child keeps only the dup2 results, no other child gets them.
    for (int i = 0; err == 0 && i < fd_count; i++) {
        int copy = fcntl(parent_fds[i], F_DUPFD_CLOEXEC, max_child + 1);
        if (copy < 0) {
            err = errno;
            break;
        }
        temporaries[temporary_count++] = copy;
        err = posix_spawn_file_actions_adddup2(&actions, copy, child_fds[i]);
    }
    for (int standard = 0; err == 0 && standard <= 2; standard++) {
        int named = 0;
        for (int i = 0; i < fd_count; i++) {
            if (child_fds[i] == standard) named = 1;
        }
        if (!named) err = posix_spawn_file_actions_addopen(&actions, standard, "/dev/null", O_RDWR, 0);
    }
    if (err == 0 && cwd != NULL) err = posix_spawn_file_actions_addchdir_np(&actions, cwd);
    // Nothing else reaches the child: descriptors that other code in this process left inheritable (a plain
    // open, a socket, a shell's 10 and 251) are closed in it, and so are the temporaries above.
    if (err == 0) err = posix_spawn_file_actions_addclosefrom_np(&actions, max_child + 1);

    pid_t pid = -1;
    if (err == 0) {
        char *const *environment = envp != NULL ? envp : environ;
        err = search_path ? posix_spawnp(&pid, file, &actions, &attributes, argv, environment)
                          : posix_spawn(&pid, file, &actions, &attributes, argv, environment);
    }
    for (int i = 0; i < temporary_count; i++) close(temporaries[i]);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (err != 0) return err;

    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        err = errno;
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        return err;
    }
    *pid_out = pid;
    *pidfd_out = pidfd;
    return 0;
}

int cws_reap(pid_t pid, int *exit_code, int *signal) {
    int status = 0;
    pid_t result;
    do {
        result = waitpid(pid, &status, WNOHANG);
    } while (result < 0 && errno == EINTR);
    if (result < 0) return -errno;
    if (result == 0) return 0;
    if (WIFEXITED(status)) {
        *exit_code = WEXITSTATUS(status);
        *signal = 0;
    } else {
        *exit_code = -1;
        *signal = WTERMSIG(status);
    }
    return 1;
}

int cws_memfd(const char *name, uint64_t size) {
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    // Owner only (a memfd starts 0777), and no worker may shrink it under another's mapping (SIGBUS) or grow it.
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)size) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int cws_memfd_sealed(const char *name, const void *bytes, size_t length) {
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    size_t written = 0;
    int failed = fchmod(fd, 0600) != 0;
    while (!failed && written < length) {
        ssize_t n = write(fd, (const char *)bytes + written, length - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) failed = 1; else written += (size_t)n;
    }
    if (failed || fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int err = errno ? errno : EIO;
        close(fd);
        return -err;
    }
    return fd;
}

int cws_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred credentials;
    socklen_t length = sizeof(credentials);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return errno;
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    return 0;
}

int cws_unix_connect(const char *path) {
    struct sockaddr_un address;
    memset(&address, 0, sizeof(address));
    address.sun_family = AF_UNIX;
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof(address.sun_path)) return -ENAMETOOLONG;
    memcpy(address.sun_path, path, length);
    // Blocking for the connect itself (immediate for a Unix socket: it succeeds, or fails with
    // ECONNREFUSED, ENOENT, EACCES or EAGAIN), non-blocking afterwards for the event loop.
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int result;
    do {
        result = connect(fd, (struct sockaddr *)&address, sizeof(address));
    } while (result != 0 && errno == EINTR);
    if (result != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int cws_ignore_sigpipe(void) {
    struct sigaction current;
    if (sigaction(SIGPIPE, NULL, &current) != 0) return errno;
    if ((current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_DFL) {
        struct sigaction ignore = {0};
        ignore.sa_handler = SIG_IGN;
        if (sigaction(SIGPIPE, &ignore, NULL) != 0) return errno;
    }
    return 0;
}

int cws_process_in_group(pid_t pid, gid_t gid) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *file = fopen(path, "re");
    if (file == NULL) return -errno;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof(line), file) != NULL) {
        int isGid = strncmp(line, "Gid:", 4) == 0;
        if (!isGid && strncmp(line, "Groups:", 7) != 0) continue;
        char *cursor = line + (isGid ? 4 : 7);
        for (;;) {
            char *end;
            unsigned long value = strtoul(cursor, &end, 10);
            if (end == cursor) break;
            if ((gid_t)value == gid) {
                found = 1;
                break;
            }
            cursor = end;
        }
    }
    fclose(file);
    return found;
}

int cws_wait_gone(pid_t pid, int timeout_ms) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) return errno == ESRCH ? 1 : -errno;
    struct pollfd entry = {.fd = fd, .events = POLLIN, .revents = 0};
    int result;
    do {
        result = poll(&entry, 1, timeout_ms);
    } while (result < 0 && errno == EINTR);
    int err = errno;
    close(fd);
    if (result < 0) return -err;
    return result > 0 ? 1 : 0;
}

int cws_mark_inheritable_cloexec(int first, int *marked, int capacity) {
    int directory = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0) return -errno;
    DIR *listing = fdopendir(directory);
    if (listing == NULL) {
        int err = errno;
        close(directory);
        return -err;
    }
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(listing)) != NULL) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
        int fd = atoi(entry->d_name);
        if (fd < first || fd == directory) continue;
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0 || (flags & FD_CLOEXEC)) continue;
        if (count == capacity) break;
        if (fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0) marked[count++] = fd;
    }
    closedir(listing);
    return count;
}

void cws_unmark_cloexec(const int *marked, int count) {
    for (int i = 0; i < count; i++) {
        int flags = fcntl(marked[i], F_GETFD);
        if (flags >= 0) fcntl(marked[i], F_SETFD, flags & ~FD_CLOEXEC);
    }
}

/// The guardian's loop, in the forked child: only async-signal-safe calls (read, kill, _exit), no allocation.
static void cws_guardian_main(int control, pid_t *groups, int capacity) {
    int count = 0;
    int32_t message[2 * 64];
    for (;;) {
        ssize_t n = read(control, message, sizeof(message));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // end of file: the supervisor is gone (or a read error, treated alike)
        // Messages are 8 bytes and written whole (less than PIPE_BUF), so reads return whole messages.
        for (ssize_t i = 0; i + 1 < n / 4; i += 2) {
            pid_t group = (pid_t)message[i + 1];
            if (message[i] == 1) {
                if (count < capacity) groups[count++] = group;
            } else {
                for (int j = 0; j < count; j++) {
                    if (groups[j] == group) {
                        groups[j] = groups[--count];
                        break;
                    }
                }
            }
        }
    }
    for (int i = 0; i < count; i++) kill(-groups[i], SIGKILL);
    _exit(0);
}

int cws_guardian_start(int capacity, char *title_area, size_t title_length, pid_t *pid_out, int *pidfd_out,
                       int *control_out) {
    if (capacity < 1) return EINVAL;
    pid_t *groups = malloc(sizeof(pid_t) * (size_t)capacity);
    if (groups == NULL) return ENOMEM;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        int err = errno;
        free(groups);
        return err;
    }
    // The child must not run a signal handler of this process before it has reset them: block everything
    // around the fork, as posix_spawn does.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    // _Fork: no atfork handlers (Dispatch's, the Swift runtime's) run in either process.
    pid_t pid = _Fork();
    if (pid == 0) {
        // The child of a threaded process: async-signal-safe calls only, until _exit.
        setsid();
        prctl(PR_SET_NAME, "bgworker-guard", 0, 0, 0);
        // Its command line too (this copy of the supervisor's argv memory): `pkill -f`, `pgrep` and `kill -9
        // $(pidof ...)` aimed at the supervisor must not take the guardian with it.
        if (title_area != NULL && title_length > 0) {
            static const char title[] = "bgworker-guard";
            for (size_t i = 0; i < title_length; i++) title_area[i] = i < sizeof(title) - 1 ? title[i] : '\0';
        }
        struct sigaction ignore = {0};
        ignore.sa_handler = SIG_IGN;
        struct sigaction standard = {0};
        standard.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++) {
            // Ignored: a signal meant for the supervisor's process or group (pkill by name, a terminal's ^C)
            // must not take the guardian away before the supervisor is gone.
            int ignored = sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT || sig == SIGUSR1 ||
                          sig == SIGUSR2 || sig == SIGPIPE;
            sigaction(sig, ignored ? &ignore : &standard, NULL);
        }
        int control = fds[0];
        if (control != 3) {
            dup2(control, 3);
            control = 3;
        }
        syscall(SYS_close_range, 0, 2, 0);
        syscall(SYS_close_range, 4, ~0U, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        cws_guardian_main(control, groups, capacity);
    }
    int err = pid < 0 ? errno : 0;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    free(groups);
    close(fds[0]);
    if (err != 0) {
        close(fds[1]);
        return err;
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        err = errno;
        close(fds[1]);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        return err;
    }
    *pid_out = pid;
    *pidfd_out = pidfd;
    *control_out = fds[1];
    return 0;
}

int cws_guardian_send(int control, int add, pid_t group) {
    int32_t message[2] = {add ? 1 : 2, (int32_t)group};
    for (;;) {
        ssize_t n = write(control, message, sizeof(message));
        if (n == (ssize_t)sizeof(message)) return 0;
        if (n < 0 && errno == EINTR) continue;
        return n < 0 ? errno : EIO;
    }
}

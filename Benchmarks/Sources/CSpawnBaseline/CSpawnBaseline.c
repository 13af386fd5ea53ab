#define _GNU_SOURCE
#include "CSpawnBaseline.h"

#include <errno.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <uv.h>

int csb_posix_spawn_and_wait(const char *path, char *const envp[]) {
    pid_t pid;
    char *argv[] = {(char *)path, NULL};
    int err = posix_spawn(&pid, path, NULL, NULL, argv, envp);
    if (err != 0) return -err;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -errno;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int csb_posix_spawn_only(const char *path, char *const envp[]) {
    pid_t pid;
    char *argv[] = {(char *)path, NULL};
    int err = posix_spawn(&pid, path, NULL, NULL, argv, envp);
    return err != 0 ? -err : pid;
}

int csb_reap(int pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -errno;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static uv_loop_t *csb_loop = NULL;
static int csb_exit_status = -1;

static void csb_on_exit_free(uv_process_t *process, int64_t status, int signal) {
    (void)status;
    (void)signal;
    uv_close((uv_handle_t *)process, (uv_close_cb)free);
}

static uv_loop_t *csb_shared_loop(void) {
    if (csb_loop == NULL) {
        csb_loop = malloc(sizeof(uv_loop_t));
        uv_loop_init(csb_loop);
    }
    return csb_loop;
}

static int csb_spawn_detached_child(const char *path, char *const envp[], uv_exit_cb on_exit) {
    uv_process_t *process = malloc(sizeof(uv_process_t));
    uv_process_options_t options = {0};
    char *argv[] = {(char *)path, NULL};
    uv_stdio_container_t stdio[3];
    for (int i = 0; i < 3; i++) {
        stdio[i].flags = UV_INHERIT_FD;
        stdio[i].data.fd = i;
    }
    options.exit_cb = on_exit;
    options.file = path;
    options.args = argv;
    options.env = (char **)envp;
    options.stdio = stdio;
    options.stdio_count = 3;
    options.flags = UV_PROCESS_DETACHED;
    int err = uv_spawn(csb_shared_loop(), process, &options);
    if (err != 0) {
        uv_close((uv_handle_t *)process, (uv_close_cb)free);
        return err;
    }
    return process->pid;
}

static void csb_on_exit_record(uv_process_t *process, int64_t status, int signal) {
    csb_exit_status = signal ? 128 + signal : (int)status;
    csb_on_exit_free(process, status, signal);
}

int csb_uv_spawn_and_wait(const char *path, char *const envp[]) {
    csb_exit_status = -1;
    int pid = csb_spawn_detached_child(path, envp, csb_on_exit_record);
    uv_run(csb_shared_loop(), UV_RUN_DEFAULT);
    return pid < 0 ? pid : csb_exit_status;
}

int csb_uv_spawn_only(const char *path, char *const envp[]) {
    return csb_spawn_detached_child(path, envp, csb_on_exit_free);
}

void csb_uv_reap_all(void) { uv_run(csb_shared_loop(), UV_RUN_DEFAULT); }

static int csb_alive = 0;

static void csb_on_exit_count(uv_process_t *process, int64_t status, int signal) {
    csb_alive--;
    csb_on_exit_free(process, status, signal);
}

int csb_uv_spawn_throughput(const char *path, char *const envp[], int total, int max_alive) {
    int started = 0;
    csb_alive = 0;
    while (started < total || csb_alive > 0) {
        while (started < total && csb_alive < max_alive) {
            int pid = csb_spawn_detached_child(path, envp, csb_on_exit_count);
            if (pid < 0) return pid;
            csb_alive++;
            started++;
        }
        uv_run(csb_shared_loop(), UV_RUN_ONCE);
    }
    return 0;
}

// Spawn baselines for the benchmarks: the same work as UVConcurrency's spawn path, in plain C.
#ifndef CSPAWNBASELINE_H
#define CSPAWNBASELINE_H

/// posix_spawn(path) with no arguments and environment `envp`, then waitpid for it. Returns its exit status (0 for /bin/true) or -errno.
int csb_posix_spawn_and_wait(const char *path, char *const envp[]);

/// Only the posix_spawn call, until the pid is known; returns the pid (or -errno). Reap it with `csb_reap`.
int csb_posix_spawn_only(const char *path, char *const envp[]);

/// waitpid for `pid`; returns its exit status or -errno.
int csb_reap(int pid);

/// uv_spawn(path) (detached, like the supervisor's workers) with environment `envp` on a private libuv loop (created on first use,
/// run on the calling thread), then uv_run until
/// the exit callback ran and the handle closed. Returns the exit status or a negative libuv error.
int csb_uv_spawn_and_wait(const char *path, char *const envp[]);

/// Only the uv_spawn call on the private loop, until the pid is known; returns the pid (or a negative libuv
/// error). The child is reaped by `csb_uv_reap_all`.
int csb_uv_spawn_only(const char *path, char *const envp[]);

/// Runs the private loop until every child started by `csb_uv_spawn_only` was reaped.
void csb_uv_reap_all(void);

/// Starts `total` children of `path` through uv_spawn, never more than `max_alive` at once, reaping as they
/// exit; returns when all were reaped (0) or on the first error (a negative libuv error).
int csb_uv_spawn_throughput(const char *path, char *const envp[], int total, int max_alive);

#endif

// Spawn baselines for the benchmarks: the same work as UVConcurrency's spawn path, in plain C.
#ifndef CSPAWNBASELINE_H
#define CSPAWNBASELINE_H

/// posix_spawn(path) with no arguments and environment `envp`, then waitpid for it. Returns its exit status (0 for /bin/true) or -errno.
int csb_posix_spawn_and_wait(const char *path, char *const envp[]);

/// uv_spawn(path) with environment `envp` on a private libuv loop (created on first use, run on the calling thread), then uv_run until
/// the exit callback ran and the handle closed. Returns the exit status or a negative libuv error.
int csb_uv_spawn_and_wait(const char *path, char *const envp[]);

#endif

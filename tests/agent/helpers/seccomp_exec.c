/* seccomp_exec: run a command with io_uring blocked by a real seccomp filter.
 *
 *   seccomp_exec EPERM|ENOSYS COMMAND [ARG...]
 *
 * Installs a libseccomp filter (default allow) that makes io_uring_setup, io_uring_enter and
 * io_uring_register fail with the given errno -- what Docker >= 25 / containerd >= 2.0
 * RuntimeDefault (EPERM) and CRI-O/Podman (ENOSYS) do -- then execs COMMAND. The filter is
 * inherited across execve (no_new_privs is set by libseccomp), so the sidecar cannot undo it.
 * Build: gcc -O2 -o seccomp_exec seccomp_exec.c -lseccomp
 */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s EPERM|ENOSYS COMMAND [ARG...]\n", argv[0]);
        return 64;
    }
    int err;
    if (strcmp(argv[1], "EPERM") == 0)
        err = EPERM;
    else if (strcmp(argv[1], "ENOSYS") == 0)
        err = ENOSYS;
    else {
        fprintf(stderr, "seccomp_exec: errno must be EPERM or ENOSYS, not %s\n", argv[1]);
        return 64;
    }
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        fprintf(stderr, "seccomp_exec: seccomp_init failed\n");
        return 70;
    }
    const char *calls[] = {"io_uring_setup", "io_uring_enter", "io_uring_register"};
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        int nr = seccomp_syscall_resolve_name(calls[i]);
        int rc = nr == __NR_SCMP_ERROR ? -EINVAL : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 0);
        if (rc < 0) {
            fprintf(stderr, "seccomp_exec: rule for %s: %s\n", calls[i], strerror(-rc));
            return 70;
        }
    }
    int rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc < 0) {
        fprintf(stderr, "seccomp_exec: seccomp_load: %s\n", strerror(-rc));
        return 70;
    }
    execvp(argv[2], argv + 2);
    fprintf(stderr, "seccomp_exec: exec %s: %s\n", argv[2], strerror(errno));
    return 127;
}

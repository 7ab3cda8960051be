/* cells._spawn: start one workload process with clone3, without copying the supervisor's memory.
 *
 * Why C: Python's os.fork() copies the page tables of the whole (~38 MB) supervisor (~2.4 ms) and
 * the child then runs Python to set itself up; a cgroup.procs write costs an RCU grace period
 * (5-16 ms here) unless another one happened within the last grace period. This module instead:
 *
 *   - clone3(CLONE_VM | CLONE_INTO_CGROUP): no page-table copy (CLONE_VM dropped when the child is
 *     born under a memory limit: see the clone flags below), and the child is born in its leaf of
 *     the unified hierarchy (no cgroup.procs write at all on a pure cgroup v2 host);
 *   - on hybrid hosts joins each v1 hierarchy by writing "0" (= the calling thread) to its `tasks`
 *     file: moving only the calling thread skips cgroup_threadgroup_rwsem, hence the grace period;
 *     the child is single-threaded, so thread and process membership are the same;
 *   - runs the child's setup in C with raw syscalls only (it shares the supervisor's memory: no
 *     malloc, no locks, no glibc set*id wrappers, which would signal the supervisor's threads).
 *
 * The parent blocks every signal from before clone3 until the child has exec'd or exited (so no
 * handler runs in the child, and nothing in the parent writes the errno the child shares), waits on
 * a CLOEXEC pipe (EOF = exec'd or died) with a timeout, and reads the failing stage and errno the
 * child left in shared memory. The caller reaps a failed child itself.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLONE_NEWPID
#define CLONE_NEWPID 0x20000000
#endif

#if defined(__x86_64__)
#define HAVE_CLONE3_TRAMPOLINE 1
#else
#define HAVE_CLONE3_TRAMPOLINE 0
#endif

#define CHILD_STACK_SIZE (256 * 1024)
#define MAX_NS 16

/* Stages, in the order the child runs them; names match cells/spawn.py's Python child. */
enum stage { ST_OK = 0, ST_SIGNALS, ST_SETSID, ST_CGROUP, ST_SETNS, ST_UNSHARE, ST_BOUNDING,
             ST_SETGROUPS, ST_SETGID, ST_SETUID, ST_CAPS, ST_CHDIR, ST_STDIO, ST_NNP, ST_SECCOMP,
             ST_EXEC };
static const char *const STAGE_NAMES[] = {"", "setup", "setup", "cgroup", "setns", "unshare", "caps",
                                          "setgroups", "setgid", "setuid", "caps", "chdir", "setup",
                                          "no_new_privs", "seccomp", "exec"};

struct kernel_sigaction_ {
    void (*handler)(int);
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

struct clone_args_ {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    uint64_t set_tid, set_tid_size, cgroup;
};

struct job {
    char *const *argv;
    char *const *envp;
    char *const *candidates; /* full paths to try in order (a PATH search done by the caller) */
    int stdio[3];
    const char *cwd;         /* NULL: keep */
    long uid, gid;           /* -1: keep */
    char *const *tasks;      /* v1 `tasks` files: write "0" */
    int ns_fd[MAX_NS], ns_type[MAX_NS], n_ns;
    int report_fd;           /* CLOEXEC write end: closes on exec */
    int unshare_flags;       /* after setns: e.g. CLONE_NEWCGROUP (0: none) */
    int contain;             /* 1: cut capabilities to cap_mask (bounding, permitted, effective;
                                inheritable and ambient emptied) */
    uint64_t cap_mask;
    int no_new_privs;
    struct sock_fprog seccomp; /* .len 0: no filter */
    struct report *report; /* written by the child: a MAP_SHARED page (the child may have its own mm) */
};

/* What the child says, read by the parent after EOF. */
struct report {
    volatile int stage, err;
    volatile long ns_pid; /* the child's pid in its own pid namespace (/proc may be gone by the time
                             the parent looks: an early exit is reaped by another thread) */
};

static int fail(struct job *job, int stage, int err) {
    job->report->err = err;
    job->report->stage = stage;
    syscall(SYS_exit_group, 127);
    return 127;
}

/* The child: its own stack, the parent's memory. Never returns into the parent's code. */
static int child_main(void *arg) {
    struct job *job = arg;
    long r;
    int sig, i;
    struct kernel_sigaction_ act, old;
    uint64_t none = 0;

    job->report->ns_pid = syscall(SYS_getpid);
    /* Handlers of the parent must never run here: reset them; also the ignored signals the
     * Python child resets (Python ignores SIGPIPE/SIGXFSZ; SIGCHLD/SIGTERM/SIGINT for parity). */
    memset(&act, 0, sizeof act);
    act.handler = SIG_DFL;
    for (sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (syscall(SYS_rt_sigaction, sig, NULL, &old, 8) != 0)
            continue;
        if (old.handler == SIG_DFL)
            continue;
        if (old.handler == SIG_IGN && sig != SIGPIPE && sig != SIGXFSZ && sig != SIGCHLD &&
            sig != SIGTERM && sig != SIGINT)
            continue;
        syscall(SYS_rt_sigaction, sig, &act, NULL, 8);
    }
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8) != 0)
        return fail(job, ST_SIGNALS, errno);
    if (syscall(SYS_setsid) < 0)
        return fail(job, ST_SETSID, errno);
    for (i = 0; job->tasks[i]; i++) {
        int fd = (int)syscall(SYS_openat, AT_FDCWD, job->tasks[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return fail(job, ST_CGROUP, errno);
        r = syscall(SYS_write, fd, "0", 1);
        int e = errno;
        syscall(SYS_close, fd);
        if (r != 1)
            return fail(job, ST_CGROUP, r < 0 ? e : EIO);
    }
    for (i = 0; i < job->n_ns; i++)
        if (syscall(SYS_setns, job->ns_fd[i], job->ns_type[i]) != 0)
            return fail(job, ST_SETNS, errno);
    if (job->unshare_flags && syscall(SYS_unshare, job->unshare_flags) != 0)
        return fail(job, ST_UNSHARE, errno);
    /* The bounding set first, while CAP_SETPCAP is still held; EINVAL past the kernel's last cap. */
    if (job->contain)
        for (i = 0; i < 64; i++)
            if (!(job->cap_mask & (1ULL << i)) && syscall(SYS_prctl, PR_CAPBSET_DROP, i, 0, 0, 0) != 0 &&
                errno != EINVAL)
                return fail(job, ST_BOUNDING, errno);
    if (job->uid >= 0 || job->gid >= 0)
        if (syscall(SYS_setgroups, 0, NULL) != 0)
            return fail(job, ST_SETGROUPS, errno);
    if (job->gid >= 0 && syscall(SYS_setgid, job->gid) != 0)
        return fail(job, ST_SETGID, errno);
    if (job->uid >= 0 && syscall(SYS_setuid, job->uid) != 0)
        return fail(job, ST_SETUID, errno);
    if (job->contain) {
        /* A switch to a non-root uid has emptied permitted/effective already; root keeps the mask. */
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        if (syscall(SYS_capget, &hdr, data) != 0)
            return fail(job, ST_CAPS, errno);
        for (i = 0; i < 2; i++) {
            uint32_t keep = (uint32_t)(job->cap_mask >> (32 * i));
            data[i].permitted &= keep;
            data[i].effective &= keep;
            data[i].inheritable = 0;
        }
        if (syscall(SYS_capset, &hdr, data) != 0)
            return fail(job, ST_CAPS, errno);
        if (syscall(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
            return fail(job, ST_CAPS, errno);
    }
    if (job->cwd && syscall(SYS_chdir, job->cwd) != 0)
        return fail(job, ST_CHDIR, errno);
    for (i = 0; i < 3; i++) {
        if (job->stdio[i] == i) { /* dup2 onto itself keeps CLOEXEC: clear it */
            if (syscall(SYS_fcntl, i, F_SETFD, 0) != 0)
                return fail(job, ST_STDIO, errno);
        } else if (syscall(SYS_dup2, job->stdio[i], i) != i) {
            return fail(job, ST_STDIO, errno);
        }
    }
    if (job->report_fd > 3 && syscall(SYS_close_range, 3, job->report_fd - 1, 0) != 0) {
        for (i = 3; i < job->report_fd; i++)
            syscall(SYS_close, i);
    }
    if (syscall(SYS_close_range, job->report_fd + 1, ~0U, 0) != 0)
        return fail(job, ST_STDIO, errno);
    /* Last, so that nothing above runs under the filter: from here on only execve and exit_group. */
    if (job->no_new_privs && syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return fail(job, ST_NNP, errno);
    if (job->seccomp.len && syscall(SYS_prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &job->seccomp, 0, 0) != 0)
        return fail(job, ST_SECCOMP, errno);
    /* os.execvpe's rule: report the first error that is not ENOENT/ENOTDIR, else the last one. */
    int saved = 0, last = ENOENT;
    for (i = 0; job->candidates[i]; i++) {
        syscall(SYS_execve, job->candidates[i], job->argv, job->envp);
        last = errno;
        if (last != ENOENT && last != ENOTDIR && !saved)
            saved = last;
    }
    return fail(job, ST_EXEC, saved ? saved : last);
}

#if HAVE_CLONE3_TRAMPOLINE
/* clone3 with a new stack: the child must not return through the caller's frames, so it calls
 * fn(arg) straight from here and exits with its result. rdi/rsi/r8/r9 survive the syscall. */
static long clone3_run(struct clone_args_ *args, int (*fn)(void *), void *arg) {
    long ret;
    register void *r8 __asm__("r8") = arg;
    register int (*r9)(void *) __asm__("r9") = fn;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "mov %%r8, %%rdi\n\t"
        "call *%%r9\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $231, %%eax\n\t" /* exit_group */
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "=a"(ret)
        : "0"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(r8), "r"(r9)
        : "rcx", "r11", "memory", "cc");
    return ret;
}
#endif

/* NULL-terminated array of the bytes objects in a sequence (borrowed buffers). */
static char **byte_list(PyObject *seq, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    char **out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (!out) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyBytes_Check(item) || (Py_ssize_t)strlen(PyBytes_AS_STRING(item)) != PyBytes_GET_SIZE(item)) {
            PyErr_Format(PyExc_ValueError, "%s: items must be bytes without NUL", what);
            PyMem_Free(out);
            Py_DECREF(fast);
            return NULL;
        }
        out[i] = PyBytes_AS_STRING(item); /* kept alive by the caller's sequence */
    }
    Py_DECREF(fast);
    return out;
}

static int elapsed_ms(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int)((t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000);
}

PyDoc_STRVAR(spawn_doc,
"spawn(argv, envp, candidates, stdio, cwd, uid, gid, cgroup_fd, tasks, namespaces, pidns_fd,\n"
"      self_pidns_fd, timeout_ms, unshare_flags, cap_mask, no_new_privs, seccomp)\n"
"      -> (pid, stage, errno, ns_pid)\n\n"
"Start one process; see the module comment in _spawn.c. stage is '' once it exec'd; otherwise\n"
"the child has exited (the caller reaps it) and stage/errno say which step failed. ns_pid: its\n"
"pid in its own pid namespace (0 if it never ran).\n"
"cgroup_fd: a unified-hierarchy directory (CLONE_INTO_CGROUP) or -1; tasks: v1 `tasks` files;\n"
"namespaces: ((fd, nstype), ...) entered in order; pidns_fd: entered by the parent around clone3\n"
"so that the child is born in it (self_pidns_fd restores the parent's).\n"
"unshare_flags: unshared after the setns steps (0: none); cap_mask: capabilities kept (-1: no\n"
"change); no_new_privs: 0/1; seccomp: a classic BPF program (struct sock_filter array) or None,\n"
"loaded as the last step before execve.");

static PyObject *spawn(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *argv_o, *envp_o, *cand_o, *tasks_o, *ns_o, *cwd_o, *seccomp_o;
    int in_fd, out_fd, err_fd, cgroup_fd, pidns_fd, self_pidns_fd, timeout_ms, unshare_flags, nnp, share_vm;
    long uid, gid;
    long long cap_mask;
    if (!PyArg_ParseTuple(args, "OOO(iii)OlliOOiiiiLpOp:spawn", &argv_o, &envp_o, &cand_o, &in_fd, &out_fd,
                          &err_fd, &cwd_o, &uid, &gid, &cgroup_fd, &tasks_o, &ns_o, &pidns_fd,
                          &self_pidns_fd, &timeout_ms, &unshare_flags, &cap_mask, &nnp, &seccomp_o, &share_vm))
        return NULL;

    struct job job;
    memset(&job, 0, sizeof job);
    char **argv = NULL, **envp = NULL, **cand = NULL, **tasks = NULL;
    void *stack = MAP_FAILED;
    struct report *report = MAP_FAILED;
    int pipefd[2] = {-1, -1};
    PyObject *result = NULL;

    if (!(argv = byte_list(argv_o, "argv")) || !(envp = byte_list(envp_o, "envp")) ||
        !(cand = byte_list(cand_o, "candidates")) || !(tasks = byte_list(tasks_o, "tasks")))
        goto out;
    if (cwd_o != Py_None) {
        if (!PyBytes_Check(cwd_o)) {
            PyErr_SetString(PyExc_TypeError, "cwd must be bytes or None");
            goto out;
        }
        job.cwd = PyBytes_AS_STRING(cwd_o);
    }
    PyObject *ns_fast = PySequence_Fast(ns_o, "namespaces");
    if (!ns_fast)
        goto out;
    Py_ssize_t n_ns = PySequence_Fast_GET_SIZE(ns_fast);
    if (n_ns > MAX_NS) {
        Py_DECREF(ns_fast);
        PyErr_SetString(PyExc_ValueError, "too many namespaces");
        goto out;
    }
    for (Py_ssize_t i = 0; i < n_ns; i++) {
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(ns_fast, i), "ii", &job.ns_fd[i], &job.ns_type[i])) {
            Py_DECREF(ns_fast);
            goto out;
        }
    }
    Py_DECREF(ns_fast);
    job.n_ns = (int)n_ns;
    job.argv = argv;
    job.envp = envp;
    job.candidates = cand;
    job.tasks = tasks;
    job.stdio[0] = in_fd;
    job.stdio[1] = out_fd;
    job.stdio[2] = err_fd;
    job.uid = uid;
    job.gid = gid;
    job.unshare_flags = unshare_flags;
    job.contain = cap_mask != -1;
    job.cap_mask = (uint64_t)cap_mask;
    job.no_new_privs = nnp;
    if (seccomp_o != Py_None) { /* borrowed: the caller's bytes outlive this call */
        if (!PyBytes_Check(seccomp_o) || PyBytes_GET_SIZE(seccomp_o) % sizeof(struct sock_filter) ||
            PyBytes_GET_SIZE(seccomp_o) / sizeof(struct sock_filter) > BPF_MAXINSNS) {
            PyErr_SetString(PyExc_ValueError, "seccomp must be bytes of struct sock_filter, at most 4096");
            goto out;
        }
        job.seccomp.len = (unsigned short)(PyBytes_GET_SIZE(seccomp_o) / sizeof(struct sock_filter));
        job.seccomp.filter = (struct sock_filter *)PyBytes_AS_STRING(seccomp_o);
    }

#if !HAVE_CLONE3_TRAMPOLINE
    errno = ENOSYS;
    PyErr_SetFromErrno(PyExc_OSError);
    goto out;
#else
    stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                 -1, 0);
    if (stack != MAP_FAILED)
        report = mmap(NULL, sizeof *report, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (stack == MAP_FAILED || report == MAP_FAILED || pipe2(pipefd, O_CLOEXEC) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    job.report = report;
    job.report_fd = pipefd[1];

    struct clone_args_ ca;
    memset(&ca, 0, sizeof ca);
    /* Sharing our memory saves copying the page tables, unless the child is born under a memory
     * limit: the cell's OOM killer, choosing the child before its exec, kills every process that
     * shares the victim's memory, the supervisor with it (tests/cells/test_runtime.py). */
    ca.flags = share_vm ? CLONE_VM : 0;
    ca.exit_signal = SIGCHLD;
    ca.stack = (uint64_t)(uintptr_t)stack;
    ca.stack_size = CHILD_STACK_SIZE;
    if (cgroup_fd >= 0) {
        ca.flags |= CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)cgroup_fd;
    }

    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    long pid;
    int clone_err = 0;
    if (pidns_fd >= 0 && setns(pidns_fd, CLONE_NEWPID) != 0) {
        clone_err = errno;
        pid = -1;
    } else {
        pid = clone3_run(&ca, child_main, &job);
        if (pid < 0)
            clone_err = (int)-pid;
        if (pidns_fd >= 0)
            (void)setns(self_pidns_fd, CLONE_NEWPID); /* valid fd on our own pid ns: cannot fail */
    }
    close(pipefd[1]);
    pipefd[1] = -1;
    if (pid < 0) {
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        errno = clone_err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    /* Wait for EOF: exec'd (CLOEXEC) or exited. Signals stay blocked: the child shares our memory.
     * The GIL is released meanwhile: the caller may be a worker thread, and the supervisor's event
     * loop keeps serving other cells while a child is slow to exec (nothing below touches Python). */
    int timed_out = 0;
    Py_BEGIN_ALLOW_THREADS
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
    for (;;) {
        int left = timeout_ms - elapsed_ms(&t0);
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        int n = poll(&pfd, 1, left);
        if (n > 0)
            break;
        if (n < 0 && errno != EINTR) { /* cannot wait: the child must not outlive its stack */
            timed_out = 1;
            break;
        }
    }
    if (timed_out) {
        kill((pid_t)pid, SIGKILL);
        /* the child's stack and job live here: wait until it is really gone before freeing them */
        siginfo_t info;
        while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR)
            ;
        report->stage = -1;
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    Py_END_ALLOW_THREADS
    if (report->stage == -1)
        result = Py_BuildValue("(lsil)", pid, "setup", ETIMEDOUT, report->ns_pid);
    else
        result = Py_BuildValue("(lsil)", pid, STAGE_NAMES[report->stage], report->err, report->ns_pid);
#endif
out:
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (stack != MAP_FAILED) /* unused by now: the child exec'd (new mm) or exited before EOF */
        munmap(stack, CHILD_STACK_SIZE);
    if (report != MAP_FAILED)
        munmap(report, sizeof *report);
    PyMem_Free(argv);
    PyMem_Free(envp);
    PyMem_Free(cand);
    PyMem_Free(tasks);
    return result;
}

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS, spawn_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cells._spawn",
    "clone3-based spawner of the supervisor (see _spawn.c); cells.spawn falls back to fork without it.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__spawn(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "SUPPORTED", HAVE_CLONE3_TRAMPOLINE) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

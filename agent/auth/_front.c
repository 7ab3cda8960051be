/* agent.auth._front: the silent phase of the mTLS TCP listener (agent.auth.tlsfront) in a native thread.
 *
 * Why C: a TCP flood's connections must be accepted as fast as they arrive, or the kernel's accept
 * queue (4,096: net.core.somaxconn) fills and drops every new SYN, an admin's too, which its client
 * resends only after 1 s, then 3 s. In Python on the front's event loop each accepted connection
 * cost ~90 us of CPU (and the GIL, shared with cellard's main loop); the kernel's own share of that
 * (accept4, TCP_REPAIR, close, epoll_ctl) is ~20 us. This thread does only that share, without the GIL.
 *
 * What it does, with the same rules as tlsfront.Admission:
 *   - accepts on the listener and holds each connection "silent" (one fd, in one epoll set) until
 *     its first byte; per client address (IPv4, or an IPv6 /64) at most per_address connections,
 *     silent or handed over, and total in all;
 *   - a newcomer over a cap takes the place of the oldest silent connection of its address (per-address
 *     cap) or of all (total cap), dropped without a word (TCP_REPAIR then close: no FIN, no RST, so a
 *     flooder that never sends does not reconnect at once); a victim that has sent a byte meanwhile
 *     is handed over instead and another one looked for;
 *   - hands over (kind 0) a connection that sent its first byte: Python joins it to gRPC, counts it
 *     until it calls release(key);
 *   - hands over (kind 1: its address is full, kind 2: all are full) a newcomer for which no silent
 *     connection can make room: Python displaces an unproven talking one and calls adopt(fd), or
 *     refuses it;
 *   - closes (with a FIN) a silent connection after handshake_s.
 * Handovers are queued and announced by writing to notify_fd (an eventfd Python's loop reads).
 * Every access to the state is under one mutex; Python's calls release the GIL while they wait.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef TCP_REPAIR
#define TCP_REPAIR 19
#endif

#define BUCKETS 4096
#define ACCEPT_BURST 1024
#define EVENTS 512

struct addr;

struct conn {
    int fd;
    double since;
    struct addr *a;
    struct sockaddr_storage peer;
    struct conn *gprev, *gnext; /* all silent connections, oldest first */
    struct conn *aprev, *anext; /* this address's silent connections, oldest first */
};

struct addr {
    unsigned char key[16]; /* IPv4 as ::ffff:a.b.c.d, IPv6 its /64 */
    long silent, held;
    struct conn *head, *tail;
    struct addr *next; /* bucket chain */
};

struct handoff {
    int fd, kind;
    char peer[80], key[64];
};

typedef struct {
    PyObject_HEAD
    int inited;
    pid_t owner; /* the process that started the thread: a forked child has no such thread */
    pthread_mutex_t mu;
    pthread_t thread;
    int running, stopping;
    int listen_fd, notify_fd, epfd, wake_fd;
    long per_address, total;
    double handshake_s;
    long silent, held;
    unsigned long long accepted, displaced, expired, handed, starved;
    double paused_until; /* out of fds: accepting resumes then */
    struct conn *ghead, *gtail;
    struct addr *buckets[BUCKETS];
    struct conn **byfd;
    size_t nbyfd;
    struct handoff *queue;
    size_t nqueue, capqueue;
} Pool;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int key_of(const struct sockaddr_storage *ss, unsigned char key[16]) {
    memset(key, 0, 16);
    if (ss->ss_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        return 0;
    }
    if (ss->ss_family == AF_INET6) {
        const unsigned char *b = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(b, mapped, 12) == 0)
            memcpy(key, b, 16);
        else
            memcpy(key, b, 8);
        return 0;
    }
    return -1;
}

/* The key as tlsfront.address_key spells it: "1.2.3.4", "2001:db8::/64". */
static void key_text(const unsigned char key[16], char *out, size_t n) {
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(key, mapped, 12) == 0) {
        inet_ntop(AF_INET, key + 12, out, (socklen_t)n);
    } else {
        char buf[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, key, buf, sizeof buf);
        snprintf(out, n, "%s/64", buf);
    }
}

static int key_parse(const char *text, unsigned char key[16]) {
    char buf[64];
    memset(key, 0, 16);
    if (strchr(text, ':') == NULL) {
        key[10] = key[11] = 0xff;
        return inet_pton(AF_INET, text, key + 12) == 1 ? 0 : -1;
    }
    snprintf(buf, sizeof buf, "%s", text);
    char *slash = strchr(buf, '/');
    if (slash != NULL)
        *slash = 0;
    return inet_pton(AF_INET6, buf, key) == 1 ? 0 : -1;
}

static void peer_text(const struct sockaddr_storage *ss, char *out, size_t n) {
    char host[INET6_ADDRSTRLEN] = "";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        snprintf(out, n, "ipv4:%s:%u", host, ntohs(s4->sin_port));
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        snprintf(out, n, "ipv6:[%s]:%u", host, ntohs(s6->sin6_port));
    }
}

static unsigned bucket_of(const unsigned char key[16]) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h % BUCKETS;
}

static struct addr *addr_get(Pool *p, const unsigned char key[16], int create) {
    unsigned b = bucket_of(key);
    for (struct addr *a = p->buckets[b]; a != NULL; a = a->next)
        if (memcmp(a->key, key, 16) == 0)
            return a;
    if (!create)
        return NULL;
    struct addr *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    memcpy(a->key, key, 16);
    a->next = p->buckets[b];
    p->buckets[b] = a;
    return a;
}

static void addr_maybe_free(Pool *p, struct addr *a) {
    if (a->silent > 0 || a->held > 0)
        return;
    struct addr **pp = &p->buckets[bucket_of(a->key)];
    while (*pp != NULL && *pp != a)
        pp = &(*pp)->next;
    if (*pp == a)
        *pp = a->next;
    free(a);
}

static int byfd_set(Pool *p, int fd, struct conn *c) {
    if ((size_t)fd >= p->nbyfd) {
        size_t n = p->nbyfd ? p->nbyfd : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        struct conn **m = realloc(p->byfd, n * sizeof *m);
        if (m == NULL)
            return -1;
        memset(m + p->nbyfd, 0, (n - p->nbyfd) * sizeof *m);
        p->byfd = m;
        p->nbyfd = n;
    }
    p->byfd[fd] = c;
    return 0;
}

static struct conn *byfd_get(Pool *p, int fd) {
    return (fd >= 0 && (size_t)fd < p->nbyfd) ? p->byfd[fd] : NULL;
}

/* Take a silent connection out of every list (its fd stays open). */
static void unlink_silent(Pool *p, struct conn *c) {
    if (c->gprev) c->gprev->gnext = c->gnext; else p->ghead = c->gnext;
    if (c->gnext) c->gnext->gprev = c->gprev; else p->gtail = c->gprev;
    struct addr *a = c->a;
    if (c->aprev) c->aprev->anext = c->anext; else a->head = c->anext;
    if (c->anext) c->anext->aprev = c->aprev; else a->tail = c->aprev;
    a->silent--;
    p->silent--;
    p->byfd[c->fd] = NULL;
}

static void notify(Pool *p) {
    uint64_t one = 1;
    ssize_t r = write(p->notify_fd, &one, sizeof one);
    (void)r;
}

static void enqueue(Pool *p, int fd, int kind, const struct sockaddr_storage *peer, const unsigned char key[16]) {
    if (p->nqueue == p->capqueue) {
        size_t n = p->capqueue ? p->capqueue * 2 : 64;
        struct handoff *q = realloc(p->queue, n * sizeof *q);
        if (q == NULL) { /* no memory: the connection is not served */
            close(fd);
            return;
        }
        p->queue = q;
        p->capqueue = n;
    }
    struct handoff *h = &p->queue[p->nqueue++];
    h->fd = fd;
    h->kind = kind;
    peer_text(peer, h->peer, sizeof h->peer);
    key_text(key, h->key, sizeof h->key);
    p->handed++;
}

static void drop_quietly(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &one, sizeof one); /* no CAP_NET_ADMIN: a plain close */
    close(fd);
}

static int has_bytes(int fd) {
    char b;
    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* The silent connection c sent its first byte: hand it to Python, counted as held. */
static void talked(Pool *p, struct conn *c) {
    struct addr *a = c->a;
    unlink_silent(p, c);
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    a->held++;
    p->held++;
    enqueue(p, c->fd, 0, &c->peer, a->key);
    free(c);
}

/* Admit fd from peer as silent, making room as tlsfront.Admission does. */
static void admit(Pool *p, int fd, const struct sockaddr_storage *peer, double now) {
    unsigned char key[16];
    if (key_of(peer, key) < 0) {
        close(fd);
        return;
    }
    struct addr *a = addr_get(p, key, 1);
    if (a == NULL) {
        close(fd);
        return;
    }
    for (;;) {
        int full_addr = a->silent + a->held >= p->per_address;
        int full_total = p->silent + p->held >= p->total;
        if (!full_addr && !full_total)
            break;
        struct conn *victim = full_addr ? a->head : p->ghead;
        if (victim == NULL) {
            enqueue(p, fd, full_addr ? 1 : 2, peer, key);
            addr_maybe_free(p, a);
            return;
        }
        if (has_bytes(victim->fd)) {
            talked(p, victim);
            continue;
        }
        struct addr *va = victim->a;
        unlink_silent(p, victim);
        drop_quietly(victim->fd);
        free(victim);
        p->displaced++;
        if (va != a)
            addr_maybe_free(p, va);
    }
    struct conn *c = calloc(1, sizeof *c);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
    if (c == NULL || byfd_set(p, fd, c) < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        if (c != NULL && (size_t)fd < p->nbyfd)
            p->byfd[fd] = NULL;
        free(c);
        close(fd);
        addr_maybe_free(p, a);
        return;
    }
    c->fd = fd;
    c->since = now;
    c->a = a;
    c->peer = *peer;
    c->gprev = p->gtail;
    if (p->gtail) p->gtail->gnext = c; else p->ghead = c;
    p->gtail = c;
    c->aprev = a->tail;
    if (a->tail) a->tail->anext = c; else a->head = c;
    a->tail = c;
    a->silent++;
    p->silent++;
}

static void accept_burst(Pool *p, double now) {
    for (int i = 0; i < ACCEPT_BURST && p->listen_fd >= 0; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(p->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of fds: stop watching the listener a moment (as asyncio's server does). */
                epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->listen_fd, NULL);
                p->paused_until = now + 0.1;
                p->starved++;
                notify(p);
                return;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            continue; /* ECONNABORTED, EINTR and such: that one connection is gone */
        }
        p->accepted++;
        admit(p, fd, &ss, now);
    }
}

static void first_byte(Pool *p, int fd) {
    struct conn *c = byfd_get(p, fd);
    if (c == NULL)
        return;
    char b;
    ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r > 0) {
        talked(p, c);
        return;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return; /* spurious: still silent */
    struct addr *a = c->a;
    unlink_silent(p, c);
    close(fd);
    free(c);
    addr_maybe_free(p, a);
}

static void expire(Pool *p, double now) {
    while (p->ghead != NULL && now - p->ghead->since >= p->handshake_s) {
        struct conn *c = p->ghead;
        struct addr *a = c->a;
        unlink_silent(p, c);
        close(c->fd);
        free(c);
        p->expired++;
        addr_maybe_free(p, a);
    }
}

static void *run(void *arg) {
    Pool *p = arg;
    struct epoll_event events[EVENTS];
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int timeout = 1000;
        if (p->ghead != NULL) {
            double wait = p->ghead->since + p->handshake_s - now_s();
            timeout = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
        }
        if (p->paused_until > 0)
            timeout = timeout < 100 ? timeout : 100;
        int stopping = p->stopping;
        pthread_mutex_unlock(&p->mu);
        if (stopping)
            break;
        int n = epoll_wait(p->epfd, events, EVENTS, timeout);
        pthread_mutex_lock(&p->mu);
        size_t queued = p->nqueue;
        double now = now_s();
        if (p->paused_until > 0 && now >= p->paused_until && p->listen_fd >= 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = p->listen_fd};
            p->paused_until = 0;
            epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->listen_fd, &ev);
        }
        for (int i = 0; i < n && !p->stopping; i++) {
            int fd = events[i].data.fd;
            if (fd == p->wake_fd) {
                uint64_t v;
                ssize_t r = read(p->wake_fd, &v, sizeof v);
                (void)r;
            } else if (fd == p->listen_fd) {
                accept_burst(p, now);
            } else {
                first_byte(p, fd);
            }
        }
        expire(p, now);
        if (p->nqueue > queued)
            notify(p);
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

/* ---- Python type ---- */

static void lock(Pool *p) {
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&p->mu);
    Py_END_ALLOW_THREADS
}

static int Pool_init(Pool *p, PyObject *args, PyObject *kw) {
    static char *names[] = {"listen_fd", "notify_fd", "per_address", "total", "handshake_s", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iilld", names, &p->listen_fd, &p->notify_fd, &p->per_address,
                                     &p->total, &p->handshake_s))
        return -1;
    if (p->inited) {
        PyErr_SetString(PyExc_RuntimeError, "Pool initialised twice");
        return -1;
    }
    pthread_mutex_init(&p->mu, NULL);
    p->inited = 1;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->epfd < 0 || p->wake_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p->wake_fd};
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = p->listen_fd};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wake_fd, &ev) < 0 ||
        epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->listen_fd, &lev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *Pool_start(Pool *p, PyObject *unused) {
    if (p->running)
        Py_RETURN_NONE;
    int err = pthread_create(&p->thread, NULL, run, p);
    if (err != 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    p->running = 1;
    p->owner = getpid();
    Py_RETURN_NONE;
}

static PyObject *Pool_take(Pool *p, PyObject *unused) {
    lock(p);
    struct handoff *q = p->queue;
    size_t n = p->nqueue;
    p->queue = NULL;
    p->nqueue = p->capqueue = 0;
    pthread_mutex_unlock(&p->mu);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        PyObject *t = Py_BuildValue("(issi)", q[i].fd, q[i].peer, q[i].key, q[i].kind);
        if (t == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    if (list == NULL) /* the fds are ours to close then */
        for (size_t i = 0; i < n; i++)
            close(q[i].fd);
    free(q);
    return list;
}

static PyObject *Pool_release(Pool *p, PyObject *arg) {
    const char *text = PyUnicode_AsUTF8(arg);
    unsigned char key[16];
    if (text == NULL)
        return NULL;
    if (key_parse(text, key) < 0)
        return PyErr_Format(PyExc_ValueError, "not an address key: %s", text);
    lock(p);
    struct addr *a = addr_get(p, key, 0);
    if (a != NULL && a->held > 0) {
        a->held--;
        p->held--;
        addr_maybe_free(p, a);
    }
    pthread_mutex_unlock(&p->mu);
    Py_RETURN_NONE;
}

static PyObject *Pool_adopt(Pool *p, PyObject *arg) {
    int fd = (int)PyLong_AsLong(arg);
    if (fd < 0 && PyErr_Occurred())
        return NULL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) {
        close(fd);
        Py_RETURN_NONE;
    }
    lock(p);
    size_t queued = p->nqueue;
    if (p->stopping)
        close(fd);
    else
        admit(p, fd, &ss, now_s());
    if (p->nqueue > queued)
        notify(p);
    pthread_mutex_unlock(&p->mu);
    Py_RETURN_NONE;
}

static PyObject *Pool_stop_accepting(Pool *p, PyObject *unused) {
    lock(p);
    if (p->listen_fd >= 0)
        epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->listen_fd, NULL);
    p->listen_fd = -1;
    pthread_mutex_unlock(&p->mu);
    Py_RETURN_NONE;
}

static void stop(Pool *p) {
    if (p->running && p->owner != getpid()) /* a forked child: the thread and its lock are not ours */
        return;
    if (p->running) {
        pthread_mutex_lock(&p->mu);
        p->stopping = 1;
        pthread_mutex_unlock(&p->mu);
        uint64_t one = 1;
        ssize_t r = write(p->wake_fd, &one, sizeof one);
        (void)r;
        pthread_join(p->thread, NULL);
        p->running = 0;
    }
    p->stopping = 1;
    while (p->ghead != NULL) { /* shutting down: a FIN, the client may reconnect elsewhere */
        struct conn *c = p->ghead;
        unlink_silent(p, c);
        close(c->fd);
        free(c);
    }
    for (size_t i = 0; i < p->nqueue; i++)
        close(p->queue[i].fd);
    p->nqueue = 0;
    for (int b = 0; b < BUCKETS; b++) {
        while (p->buckets[b] != NULL) {
            struct addr *a = p->buckets[b];
            p->buckets[b] = a->next;
            free(a);
        }
    }
    p->held = 0;
}

static PyObject *Pool_stop(Pool *p, PyObject *unused) {
    Py_BEGIN_ALLOW_THREADS
    stop(p);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Pool_stats(Pool *p, PyObject *unused) {
    lock(p);
    PyObject *d = Py_BuildValue("{s:l,s:l,s:K,s:K,s:K,s:K,s:K}", "silent", p->silent, "held", p->held,
                                "accepted", p->accepted, "displaced", p->displaced, "expired", p->expired,
                                "handed", p->handed, "starved", p->starved);
    pthread_mutex_unlock(&p->mu);
    return d;
}

static void Pool_dealloc(Pool *p) {
    if (!p->inited) {
        Py_TYPE(p)->tp_free((PyObject *)p);
        return;
    }
    stop(p);
    if (p->epfd > 0)
        close(p->epfd);
    if (p->wake_fd > 0)
        close(p->wake_fd);
    free(p->byfd);
    free(p->queue);
    pthread_mutex_destroy(&p->mu);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyMethodDef Pool_methods[] = {
    {"start", (PyCFunction)Pool_start, METH_NOARGS, "Start the accept thread."},
    {"take", (PyCFunction)Pool_take, METH_NOARGS, "The queued handovers: [(fd, peer, key, kind)]."},
    {"release", (PyCFunction)Pool_release, METH_O, "A handed-over connection of this address key closed."},
    {"adopt", (PyCFunction)Pool_adopt, METH_O, "Admit this fd (a kind 1/2 handover) as silent again."},
    {"stop_accepting", (PyCFunction)Pool_stop_accepting, METH_NOARGS, "Forget the listener (before it closes)."},
    {"stop", (PyCFunction)Pool_stop, METH_NOARGS, "End the thread; close the silent connections."},
    {"stats", (PyCFunction)Pool_stats, METH_NOARGS, "Counts: silent, held, accepted, displaced, ..."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PoolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.auth._front.Pool",
    .tp_basicsize = sizeof(Pool),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The silent phase of the mTLS TCP listener, in a native thread.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pool_init,
    .tp_dealloc = (destructor)Pool_dealloc,
    .tp_methods = Pool_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_front", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__front(void) {
    if (PyType_Ready(&PoolType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PoolType);
    if (PyModule_AddObject(m, "Pool", (PyObject *)&PoolType) < 0) {
        Py_DECREF(&PoolType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

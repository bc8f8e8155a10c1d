/* tvm_dse's thread pool for the parallel loops of TVM-compiled kernels: the launcher TVM's generated code
 * calls for each parallel loop (the contract of TVM's TVMBackendParallelLaunch: tasks 0..num_task-1 run at
 * once, task 0 in the calling thread; TVM's barrier works on the counters given in sync_handle).
 *
 * A waiting thread (an idle worker, or the caller waiting for the workers) spins without giving up its core
 * for SPIN_US_VARIABLE microseconds, then sleeps on a futex; while the pool's threads wait for a core (a
 * co-running load) it sleeps at once (see sample_contention). Why: tvm_dse/thread_pool.py.
 *
 * Built two ways by tvm_dse/thread_pool.py: into every exported library, where it defines the generated
 * code's pointer to the launcher (__TVMBackendParallelLaunch), hidden from the dynamic symbol table so that
 * TVM's loader leaves it pointing here; and, with TVM_DSE_INTERPOSE, as a library loaded before TVM's
 * runtime into tvm_dse's own process, where its TVMBackendParallelLaunch stands in for TVM's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

#define MAX_THREADS 256
#define SYNC_STRIDE 16 /* TVM's barrier (TVMBackendParallelBarrier) keeps one int counter per 64 bytes */
#if !defined(DEFAULT_SPIN_US) || !defined(SPIN_US_VARIABLE)
#error "built by tvm_dse/thread_pool.py, which defines the spin time's default and variable"
#endif
#define CONTENDED_NS 10000000L /* doubling, up to MAX_CONTENDED_NS, while contention comes back at once */
#define MAX_CONTENDED_NS 1000000000L
#define SAMPLE_NS 10000000L /* contention is judged over this long at least */
#define NOT_OPEN_YET (-2)

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

static struct {
  pthread_mutex_t launching; /* one launch at a time; a launch that finds it taken runs in its own thread */
  int threads;               /* the caller and threads - 1 workers; 0: not started in this process */
  long spin_ns;
  _Atomic int generation; /* one more per launch; the futex idle workers sleep on */
  int started_at;         /* the generation when the workers started */
  _Atomic int sleeping_workers;
  _Atomic int pending; /* workers yet to finish the current launch; the futex the caller sleeps on */
  _Atomic int caller_sleeping;
  _Atomic int failed;
  _Atomic long contended_until_ns; /* no spinning before then */
  /* written by the launching thread only: the last window's length; the last sample, its time, the thread
   * that took it (0: none to compare with) and the pool's threads' time on a core and waiting for one then */
  long contended_ns, sampled_ns, sampled_by, ran_ns, waited_ns;
  _Atomic int schedstat[MAX_THREADS]; /* each worker's /proc/thread-self/schedstat, opened by it; -1: failed */
  FTVMParallelLambda lambda;
  void* cdata;
  TVMParallelGroupEnv env;
  int sync[MAX_THREADS * SYNC_STRIDE] __attribute__((aligned(64)));
} pool = {.launching = PTHREAD_MUTEX_INITIALIZER};

static __thread int in_parallel_loop;

static long futex(volatile void* word, int op, int value) {
  return syscall(SYS_futex, (void*)word, op | FUTEX_PRIVATE_FLAG, value, NULL, NULL, 0);
}

static long now_ns(void) {
  struct timespec time;
  clock_gettime(CLOCK_MONOTONIC, &time);
  return time.tv_sec * 1000000000L + time.tv_nsec;
}

/* Adds a thread's time on a core and time runnable but waiting for one (ns; /proc/.../schedstat) to *ran and
 * *waited; 0 where it cannot be read. */
static int add_schedstat(int fd, long* ran, long* waited) {
  char text[128];
  ssize_t length = fd < 0 ? -1 : pread(fd, text, sizeof(text) - 1, 0);
  if (length <= 0) return 0;
  text[length] = 0;
  char* end;
  *ran += strtol(text, &end, 10); /* "on-core waiting timeslices" */
  *waited += strtol(end, NULL, 10);
  return 1;
}

/* Whether a co-running load takes cores from the pool, judged by the launching thread at most every
 * SAMPLE_NS from how long the pool's threads (the caller and the workers) waited for a core against how long
 * they ran since the last sample: beside a co-running process a spinning thread gets its core only for its
 * share and loses it a time slice at a time while its part of a loop waits, whereas a thread woken from sleep
 * gets its core back at once. One runnable thread more than cores makes each of ours wait 1/(threads + 1) of
 * the time; contended from half that. Kernel threads that run now and then take a few percent; a count of
 * runnable threads would take them for a load, as they queue for a core behind spinning threads. While
 * contended no thread spins and nothing is sampled (threads that sleep between loops wait to be woken, which
 * says nothing of a load); contention seen as soon as that ends doubles the time, up to MAX_CONTENDED_NS, so a
 * lasting load costs few spinning tries. */
static void sample_contention(long time) {
  long until = atomic_load_explicit(&pool.contended_until_ns, memory_order_relaxed);
  if (time < until) {
    pool.sampled_by = 0;
    return;
  }
  if (pool.sampled_by != 0 && time - pool.sampled_ns < SAMPLE_NS) return;
  long caller = syscall(SYS_gettid), ran = 0, waited = 0;
  int self = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
  int readable = add_schedstat(self, &ran, &waited);
  if (self >= 0) close(self);
  for (int id = 1; id < pool.threads; ++id) readable &= add_schedstat(pool.schedstat[id], &ran, &waited);
  int compared = pool.sampled_by == caller;
  long since = pool.sampled_ns, ran_since = ran - pool.ran_ns, waited_since = waited - pool.waited_ns;
  pool.sampled_by = caller;
  pool.sampled_ns = time;
  pool.ran_ns = ran;
  pool.waited_ns = waited;
  /* unreadable: as if contended, the safe side (waiting threads sleep at once) */
  if (readable && (!compared || 2 * (pool.threads + 1) * waited_since < ran_since + waited_since)) return;
  long doubled = 2 * pool.contended_ns;
  pool.contended_ns = since - until < SAMPLE_NS && doubled > CONTENDED_NS ? doubled : CONTENDED_NS;
  if (pool.contended_ns > MAX_CONTENDED_NS) pool.contended_ns = MAX_CONTENDED_NS;
  atomic_store_explicit(&pool.contended_until_ns, time + pool.contended_ns, memory_order_relaxed);
}

/* Whether the i-th check of a wait (from 0) is past the time this thread may spin, counted from the first. */
static int spun_out(int i, long* deadline) {
  if ((i & 63) != 0) return 0;
  long time = now_ns();
  if (i == 0) {
    int may_spin = time >= atomic_load_explicit(&pool.contended_until_ns, memory_order_relaxed);
    *deadline = may_spin ? time + pool.spin_ns : time;
  }
  return time >= *deadline;
}

static void* worker(void* arg) {
  int id = (int)(intptr_t)arg;
  int seen = pool.started_at;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL); /* the process's signals go to its own threads */
  in_parallel_loop = 1;
  atomic_store(&pool.schedstat[id], open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC));
  for (;;) {
    long deadline;
    int i = 0;
    while (atomic_load_explicit(&pool.generation, memory_order_acquire) == seen && !spun_out(i++, &deadline)) {
      CPU_RELAX();
    }
    if (atomic_load(&pool.generation) == seen) {
      atomic_fetch_add(&pool.sleeping_workers, 1);
      while (atomic_load(&pool.generation) == seen) futex(&pool.generation, FUTEX_WAIT, seen);
      atomic_fetch_sub(&pool.sleeping_workers, 1);
    }
    seen = atomic_load_explicit(&pool.generation, memory_order_acquire);
    if (id < pool.env.num_task && pool.lambda(id, &pool.env, pool.cdata) != 0) atomic_store(&pool.failed, 1);
    if (atomic_fetch_sub(&pool.pending, 1) == 1 && atomic_load(&pool.caller_sleeping)) {
      futex(&pool.pending, FUTEX_WAKE, 1);
    }
  }
  return NULL;
}

static int count_from(const char* variable) {
  const char* value = getenv(variable);
  int count = value ? atoi(value) : 0;
  return count > 0 ? count : 0;
}

static void forget_workers(void) {
  /* a forked child has no workers: the next launch starts its own */
  for (int id = 1; id < pool.threads; ++id) {
    if (pool.schedstat[id] >= 0) close(pool.schedstat[id]);
  }
  pool.threads = 0;
  pool.sampled_by = 0;
  atomic_store(&pool.sleeping_workers, 0);
  atomic_store(&pool.caller_sleeping, 0);
  pthread_mutex_init(&pool.launching, NULL);
}

static void start(void) {
  int threads = count_from("TVM_NUM_THREADS");
  if (threads == 0) threads = count_from("OMP_NUM_THREADS");
  if (threads == 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  const char* spin = getenv(SPIN_US_VARIABLE);
  pool.spin_ns = (spin ? atol(spin) : DEFAULT_SPIN_US) * 1000L;
  static int fork_handler;
  if (!fork_handler) fork_handler = pthread_atfork(NULL, NULL, forget_workers) == 0;
  /* the workers run this file's code until the process ends: the library must stay mapped even where the
   * module loaded from it is freed */
  Dl_info self;
  if (dladdr((void*)start, &self) && self.dli_fname) dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
  pool.threads = 1;
  pool.started_at = atomic_load(&pool.generation);
  for (int id = 1; id < threads; ++id) {
    pthread_t thread;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    atomic_store(&pool.schedstat[id], NOT_OPEN_YET);
    int created = pthread_create(&thread, &attributes, worker, (void*)(intptr_t)id) == 0;
    pthread_attr_destroy(&attributes);
    if (!created) break;
    pthread_setname_np(thread, "tvm_dse-pool");
    pool.threads = id + 1;
  }
  /* the first sample reads every worker's */
  for (int id = 1; id < pool.threads; ++id) {
    while (atomic_load(&pool.schedstat[id]) == NOT_OPEN_YET) sched_yield();
  }
}

static int run_alone(FTVMParallelLambda lambda, void* cdata) {
  /* one task covers the whole loop, as TVM runs it with one thread */
  int sync = 0;
  TVMParallelGroupEnv env = {&sync, 1};
  return lambda(0, &env, cdata) == 0 ? 0 : -1;
}

static int launch(FTVMParallelLambda lambda, void* cdata, int num_task) {
  if (in_parallel_loop || pthread_mutex_trylock(&pool.launching) != 0) return run_alone(lambda, cdata);
  if (pool.threads == 0) start();
  if (num_task <= 0 || num_task > pool.threads) num_task = pool.threads;
  if (num_task == 1) {
    pthread_mutex_unlock(&pool.launching);
    return run_alone(lambda, cdata);
  }
  sample_contention(now_ns());
  for (int task = 0; task < num_task; ++task) pool.sync[task * SYNC_STRIDE] = 0;
  pool.lambda = lambda;
  pool.cdata = cdata;
  pool.env.sync_handle = pool.sync;
  pool.env.num_task = num_task;
  atomic_store(&pool.failed, 0);
  atomic_store(&pool.pending, pool.threads - 1);
  atomic_fetch_add(&pool.generation, 1);
  if (atomic_load(&pool.sleeping_workers) > 0) futex(&pool.generation, FUTEX_WAKE, INT_MAX);

  in_parallel_loop = 1;
  int failed = lambda(0, &pool.env, cdata) != 0;
  in_parallel_loop = 0;
  long deadline;
  int i = 0;
  while (atomic_load_explicit(&pool.pending, memory_order_acquire) != 0 && !spun_out(i++, &deadline)) CPU_RELAX();
  if (atomic_load(&pool.pending) != 0) {
    int pending;
    atomic_store(&pool.caller_sleeping, 1);
    while ((pending = atomic_load(&pool.pending)) != 0) futex(&pool.pending, FUTEX_WAIT, pending);
    atomic_store(&pool.caller_sleeping, 0);
  }
  failed |= atomic_load(&pool.failed);
  pthread_mutex_unlock(&pool.launching);
  return failed ? -1 : 0;
}

#ifdef TVM_DSE_INTERPOSE
__attribute__((visibility("default"))) int TVMBackendParallelLaunch(FTVMParallelLambda lambda, void* cdata,
                                                                     int num_task) {
  return launch(lambda, cdata, num_task);
}
#else
/* The generated code's pointer to the launcher: hidden, so TVM's loader finds none to point elsewhere */
__attribute__((visibility("hidden"))) int (*__TVMBackendParallelLaunch)(FTVMParallelLambda, void*, int) = launch;
#endif

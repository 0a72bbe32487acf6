//! SPMD thread team: a fixed set of threads that run one closure together, like an OpenMP
//! parallel region that lasts for the whole program.
//!
//! Threads are spawned once (setup) and synchronise with a spinning barrier built on atomics, so
//! the measured phase of an app makes no `futex` calls while threads are on their own cores
//! (inside the HPC VMM every syscall is a VM exit). A waiter that spins for a long time (more
//! threads than cores, or a thread that finished its work early) falls back to occasional
//! `sched_yield` calls so oversubscribed runs still make progress.
//!
//! Reductions are deterministic: every thread writes its partial into its own cache line, and
//! after the barrier every thread adds all partials in thread order, so all threads see the
//! bit-identical result and a run with the same thread count always computes the same numbers.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Spins (`pause`, tens of cycles each) before a barrier waiter starts yielding its core: well
/// above the imbalance of a normal parallel phase on dedicated cores, so the measured phases
/// make no `sched_yield` calls there, yet short enough that oversubscribed runs (more threads
/// than cores) hand the core over quickly.
const SPINS_BEFORE_YIELD: u32 = 1 << 14;
/// Spins between two yields once yielding: a long wait costs one syscall per ~25 us, not a
/// syscall per loop turn.
const SPINS_BETWEEN_YIELDS: u32 = 1 << 10;
/// Widest reduction [`Ctx::sum_n`] supports.
pub const MAX_REDUCE: usize = 8;

/// Pads a value to its own 128-byte block (two cache lines: adjacent-line prefetchers).
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// Sense-reversing centralised barrier on atomics.
pub struct SpinBarrier {
    n: usize,
    arrived: Padded<AtomicUsize>,
    generation: Padded<AtomicUsize>,
}

impl SpinBarrier {
    /// A barrier for `n` threads (`n >= 1`).
    pub fn new(n: usize) -> Self {
        assert!(n >= 1, "a barrier needs at least one thread");
        Self {
            n,
            arrived: Padded(AtomicUsize::new(0)),
            generation: Padded(AtomicUsize::new(0)),
        }
    }

    /// Blocks until all `n` threads have called `wait` for this generation.
    pub fn wait(&self) {
        if self.n == 1 {
            return;
        }
        let gen = self.generation.0.load(Ordering::Acquire);
        if self.arrived.0.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.0.store(0, Ordering::Relaxed);
            self.generation
                .0
                .store(gen.wrapping_add(1), Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.0.load(Ordering::Acquire) == gen {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
                spins = SPINS_BEFORE_YIELD - SPINS_BETWEEN_YIELDS;
            }
        }
    }
}

/// Shared state of one team run.
struct TeamShared {
    barrier: SpinBarrier,
    /// Two banks of per-thread reduction slots, used alternately (see [`Ctx::sum_n`]).
    slots: [Vec<Padded<UnsafeCell<[f64; MAX_REDUCE]>>>; 2],
}

// SAFETY: the slots are written only by their owning thread before a barrier and read by all
// threads after it; bank alternation guarantees no thread writes a bank that another thread may
// still be reading (see `Ctx::sum_n`).
unsafe impl Sync for TeamShared {}

/// Per-thread view of a running team.
pub struct Ctx<'a> {
    /// This thread's index, `0..nthreads`.
    pub tid: usize,
    /// Team size.
    pub nthreads: usize,
    shared: &'a TeamShared,
    reductions: std::cell::Cell<usize>,
}

impl Ctx<'_> {
    /// Waits for the whole team.
    pub fn barrier(&self) {
        self.shared.barrier.wait();
    }

    /// This thread's block of `0..n` (contiguous, sizes differ by at most one).
    pub fn range(&self, n: usize) -> Range<usize> {
        partition(n, self.nthreads, self.tid)
    }

    /// True on thread 0, the one that takes the timings and does serial work.
    pub fn is_leader(&self) -> bool {
        self.tid == 0
    }

    /// Sums `v` over the team; every thread gets the same, deterministic result. Includes a
    /// barrier: after it returns, all writes made by any thread before calling it are visible.
    pub fn sum(&self, v: f64) -> f64 {
        self.sum_n([v])[0]
    }

    /// Maximum of `v` over the team (includes a barrier).
    pub fn max(&self, v: f64) -> f64 {
        self.reduce_n([v], f64::NEG_INFINITY, f64::max)[0]
    }

    /// Element-wise sums of up to [`MAX_REDUCE`] values over the team (includes a barrier).
    pub fn sum_n<const K: usize>(&self, v: [f64; K]) -> [f64; K] {
        self.reduce_n(v, 0.0, |a, b| a + b)
    }

    fn reduce_n<const K: usize>(
        &self,
        v: [f64; K],
        init: f64,
        op: impl Fn(f64, f64) -> f64,
    ) -> [f64; K] {
        const { assert!(K <= MAX_REDUCE) };
        // Reduction i uses bank i % 2. A thread writing bank b for reduction i+2 has passed the
        // barrier of reduction i+1, which every thread reaches only after it finished reading
        // bank b for reduction i: two banks and one barrier per reduction are enough.
        let bank = self.reductions.get() % 2;
        self.reductions.set(self.reductions.get() + 1);
        let slots = &self.shared.slots[bank];
        // SAFETY: only this thread writes its own slot, and no other thread reads this bank
        // until the barrier below (see above for why no reader of the previous use remains).
        unsafe {
            let mine = &mut *slots[self.tid].0.get();
            mine[..K].copy_from_slice(&v);
        }
        self.barrier();
        let mut out = [init; K];
        for slot in slots.iter() {
            // SAFETY: all writers finished before the barrier; nobody writes this bank again
            // until after the next reduction's barrier, which this thread has not reached.
            let s = unsafe { &*slot.0.get() };
            for k in 0..K {
                out[k] = op(out[k], s[k]);
            }
        }
        out
    }
}

/// The `tid`-th of `nthreads` contiguous blocks of `0..n`.
pub fn partition(n: usize, nthreads: usize, tid: usize) -> Range<usize> {
    let base = n / nthreads;
    let rem = n % nthreads;
    let start = tid * base + tid.min(rem);
    let len = base + usize::from(tid < rem);
    start..start + len
}

/// Runs `f` on `nthreads` threads (the calling thread is thread 0) and returns each thread's
/// result in thread order.
pub fn run<R: Send>(nthreads: usize, f: impl Fn(&Ctx) -> R + Sync) -> Vec<R> {
    let nthreads = nthreads.max(1);
    let mk_bank = || {
        (0..nthreads)
            .map(|_| Padded(UnsafeCell::new([0.0; MAX_REDUCE])))
            .collect()
    };
    let shared = TeamShared {
        barrier: SpinBarrier::new(nthreads),
        slots: [mk_bank(), mk_bank()],
    };
    let body = |tid: usize| {
        let ctx = Ctx {
            tid,
            nthreads,
            shared: &shared,
            reductions: std::cell::Cell::new(0),
        };
        f(&ctx)
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..nthreads)
            .map(|tid| s.spawn(move || body(tid)))
            .collect();
        let mut out = Vec::with_capacity(nthreads);
        out.push(body(0));
        out.extend(
            handles
                .into_iter()
                .map(|h| h.join().expect("a team thread panicked")),
        );
        out
    })
}

/// A slice that team threads share, each writing its own part between barriers.
///
/// This is the usual SPMD contract made explicit: the caller guarantees, through barriers, that
/// no element is written by one thread while another thread reads or writes it.
pub struct Shared<'a, T> {
    ptr: *mut T,
    len: usize,
    _life: PhantomData<&'a mut [T]>,
}

// SAFETY: `Shared` only hands out references through `unsafe` methods whose callers guarantee
// the absence of data races; the element type must itself be sendable between threads.
unsafe impl<T: Send> Sync for Shared<'_, T> {}
// SAFETY: as above, moving the view to another thread is fine for `Send` elements.
unsafe impl<T: Send> Send for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    /// Shares `data` for the lifetime of the borrow.
    pub fn new(data: &'a mut [T]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _life: PhantomData,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw pointer to the first element, for element-wise access where the threads' parts
    /// interleave (e.g. red-black sweeps). Every access through it must be in bounds and free
    /// of data races.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr
    }

    /// The whole slice, read-only.
    ///
    /// # Safety
    /// No thread may write any element while the returned reference is alive.
    pub unsafe fn get(&self) -> &[T] {
        // SAFETY: the pointer and length come from a live `&mut [T]`; the caller excludes writers.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Mutable access to `range`.
    ///
    /// # Safety
    /// No other thread may read or write any element of `range` while the returned reference
    /// is alive (normally: `range` is this thread's own block, separated by barriers).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range {range:?} out of 0..{}",
            self.len
        );
        // SAFETY: bounds checked above; the caller guarantees exclusive access to the range.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_covers_everything_once() {
        for n in 0..50 {
            for t in 1..7 {
                let mut next = 0;
                for tid in 0..t {
                    let r = partition(n, t, tid);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn reductions_agree_across_threads_and_are_exact() {
        let out = run(4, |ctx| {
            let mut acc = Vec::new();
            for i in 0..1000 {
                let s = ctx.sum((ctx.tid * 1000 + i) as f64);
                let [a, b] = ctx.sum_n([1.0, ctx.tid as f64]);
                let m = ctx.max(ctx.tid as f64 + i as f64);
                acc.push((s, a, b, m));
            }
            acc
        });
        for i in 0..1000 {
            let expect = (6000 + 4 * i) as f64;
            for t in &out {
                assert_eq!(t[i], (expect, 4.0, 6.0, 3.0 + i as f64));
            }
        }
    }

    #[test]
    fn barrier_orders_writes() {
        let mut data = vec![0usize; 64];
        let shared = Shared::new(&mut data);
        let sums = run(3, |ctx| {
            let mut seen = 0;
            for round in 1..200 {
                let r = ctx.range(shared.len());
                // SAFETY: own block, separated from the reads below by barriers.
                unsafe { shared.part_mut(r) }
                    .iter_mut()
                    .for_each(|x| *x = round);
                ctx.barrier();
                // SAFETY: nobody writes between these two barriers.
                seen += unsafe { shared.get() }
                    .iter()
                    .filter(|&&x| x == round)
                    .count();
                ctx.barrier();
            }
            seen
        });
        assert!(sums.iter().all(|&s| s == 64 * 199));
    }
}

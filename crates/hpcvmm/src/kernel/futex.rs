//! Futex wait queues keyed by guest address (one table per thread group today; cross-VM keys
//! for shared memory will live at the run level). A waiting task blocks its host thread on a
//! condition variable (no busy loop); a wake notifies it directly.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::mem::GuestRam;
use super::run::Run;
use super::task::TaskCounters;
use super::{err, Errno, SysResult};

/// The guest's 32-bit futex word at `addr` as an atomic, if aligned and inside guest memory.
pub fn atomic_word(mem: &dyn GuestRam, addr: u64) -> Option<&AtomicU32> {
    if addr % 4 != 0 {
        return None;
    }
    let p = mem.host_ptr(addr, 4).ok()?;
    // SAFETY: `p` is 4-byte aligned, inside guest memory that lives as long as `mem`, and
    // AtomicU32 has u32's layout; the guest accesses the same word with atomic instructions.
    Some(unsafe { &*(p as *const AtomicU32) })
}

/// The guest-visible waiter count of `addr`'s bucket (read by the syscall stub's FUTEX_WAKE
/// fast path). Kept under the table lock, SeqCst on both sides: a waker's stub either sees the
/// count raised or the waiter sees the waker's new futex value.
fn bucket(mem: &dyn GuestRam, addr: u64) -> &AtomicU32 {
    let p = mem
        .system_ptr(crate::layout::futex_bucket(addr), 4)
        .expect("bucket page lies in guest memory");
    // SAFETY: 4-byte aligned (bucket slots are u32s in a page), inside guest memory that
    // lives as long as `mem`; the guest only reads it.
    unsafe { &*(p as *const AtomicU32) }
}

#[derive(Debug)]
struct WaitState {
    woken: bool,
    key: u64,
}

#[derive(Debug)]
struct Waiter {
    bitset: u32,
    state: Mutex<WaitState>,
    cv: Condvar,
}

/// All futex wait queues of one process.
#[derive(Debug, Default)]
pub struct FutexTable {
    queues: Mutex<HashMap<u64, VecDeque<Arc<Waiter>>>>,
}

impl FutexTable {
    /// Wake up to `n` waiters on `addr` whose bitset matches. Returns how many were woken.
    pub fn wake(&self, mem: &dyn GuestRam, addr: u64, n: u32, bitset: u32) -> u32 {
        let mut q = self.queues.lock().unwrap();
        Self::wake_locked(mem, &mut q, addr, n, bitset)
    }

    fn wake_locked(
        mem: &dyn GuestRam,
        q: &mut HashMap<u64, VecDeque<Arc<Waiter>>>,
        addr: u64,
        n: u32,
        bitset: u32,
    ) -> u32 {
        let Some(list) = q.get_mut(&addr) else {
            return 0;
        };
        let mut woken = 0;
        let mut i = 0;
        while i < list.len() && woken < n {
            if list[i].bitset & bitset != 0 {
                let w = list.remove(i).expect("index checked");
                bucket(mem, addr).fetch_sub(1, Ordering::SeqCst);
                let mut s = w.state.lock().unwrap();
                s.woken = true;
                w.cv.notify_one();
                woken += 1;
            } else {
                i += 1;
            }
        }
        if list.is_empty() {
            q.remove(&addr);
        }
        woken
    }

    /// Nudge every waiter so it re-checks whether the run is ending.
    pub fn wake_everyone(&self) {
        let q = self.queues.lock().unwrap();
        for w in q.values().flatten() {
            let _s = w.state.lock().unwrap();
            w.cv.notify_all();
        }
    }

    fn remove(&self, mem: &dyn GuestRam, w: &Arc<Waiter>) -> bool {
        let mut q = self.queues.lock().unwrap();
        let key = w.state.lock().unwrap().key;
        if let Some(list) = q.get_mut(&key) {
            if let Some(pos) = list.iter().position(|x| Arc::ptr_eq(x, w)) {
                list.remove(pos);
                bucket(mem, key).fetch_sub(1, Ordering::SeqCst);
                if list.is_empty() {
                    q.remove(&key);
                }
                return true;
            }
        }
        false
    }

    pub fn requeue(
        &self,
        mem: &dyn GuestRam,
        from: u64,
        to: u64,
        nwake: u32,
        nmove: u32,
        cmp: Option<u32>,
    ) -> SysResult {
        let mut q = self.queues.lock().unwrap();
        if let Some(expected) = cmp {
            let word = atomic_word(mem, from).ok_or(Errno(libc::EFAULT))?;
            if word.load(Ordering::SeqCst) != expected {
                return err(libc::EAGAIN);
            }
        }
        let woken = Self::wake_locked(mem, &mut q, from, nwake, u32::MAX);
        let mut moved = 0;
        if from != to {
            let mut taken = Vec::new();
            if let Some(list) = q.get_mut(&from) {
                while moved < nmove {
                    let Some(w) = list.pop_front() else { break };
                    w.state.lock().unwrap().key = to;
                    bucket(mem, from).fetch_sub(1, Ordering::SeqCst);
                    bucket(mem, to).fetch_add(1, Ordering::SeqCst);
                    taken.push(w);
                    moved += 1;
                }
                if list.is_empty() {
                    q.remove(&from);
                }
            }
            q.entry(to).or_default().extend(taken);
        }
        Ok(u64::from(woken + moved))
    }

    /// FUTEX_WAIT: block while `*addr == val`, until woken, the deadline, or the run ending.
    #[allow(clippy::too_many_arguments)]
    pub fn wait(
        &self,
        mem: &dyn GuestRam,
        run: &Run,
        interrupted: &dyn Fn() -> bool,
        counters: &mut TaskCounters,
        addr: u64,
        val: u32,
        deadline: Option<Instant>,
        bitset: u32,
    ) -> SysResult {
        if bitset == 0 {
            return err(libc::EINVAL);
        }
        if addr % 4 != 0 {
            return err(libc::EINVAL);
        }
        let word = atomic_word(mem, addr).ok_or(Errno(libc::EFAULT))?;
        let w = Arc::new(Waiter {
            bitset,
            state: Mutex::new(WaitState {
                woken: false,
                key: addr,
            }),
            cv: Condvar::new(),
        });
        {
            let mut q = self.queues.lock().unwrap();
            let b = bucket(mem, addr);
            b.fetch_add(1, Ordering::SeqCst);
            if word.load(Ordering::SeqCst) != val {
                b.fetch_sub(1, Ordering::SeqCst);
                return err(libc::EAGAIN);
            }
            q.entry(addr).or_default().push_back(w.clone());
        }
        let t0 = Instant::now();
        counters.futex_waits += 1;
        let result = loop {
            let s = w.state.lock().unwrap();
            if s.woken {
                break Ok(0);
            }
            if run.ending() {
                drop(s);
                self.remove(mem, &w);
                break err(libc::EINTR);
            }
            if interrupted() {
                drop(s);
                // Woken concurrently if we're no longer queued: then the wake counts.
                break if self.remove(mem, &w) {
                    err(super::signals::ERESTARTSYS)
                } else {
                    Ok(0)
                };
            }
            let now = Instant::now();
            match deadline {
                Some(d) if now >= d => {
                    drop(s);
                    // Woken concurrently if we're no longer queued.
                    break if self.remove(mem, &w) {
                        err(libc::ETIMEDOUT)
                    } else {
                        Ok(0)
                    };
                }
                Some(d) => drop(w.cv.wait_timeout(s, d - now).unwrap()),
                None => drop(w.cv.wait(s).unwrap()),
            }
        };
        counters.futex_wait_s += t0.elapsed().as_secs_f64();
        result
    }

    /// FUTEX_WAKE_OP.
    pub fn wake_op(
        &self,
        mem: &dyn GuestRam,
        addr: u64,
        nwake: u32,
        addr2: u64,
        nwake2: u32,
        val3: u32,
    ) -> SysResult {
        let op = (val3 >> 28) & 0xf;
        let cmp = (val3 >> 24) & 0xf;
        let mut oparg = (val3 >> 12) & 0xfff;
        let cmparg = (val3 & 0xfff) as i32;
        if op & 8 != 0 {
            if oparg >= 32 {
                return err(libc::EINVAL);
            }
            oparg = 1 << oparg;
        }
        let word2 = atomic_word(mem, addr2).ok_or(Errno(libc::EFAULT))?;
        let mut q = self.queues.lock().unwrap();
        let old = match op & 7 {
            0 => word2.swap(oparg, Ordering::SeqCst),
            1 => word2.fetch_add(oparg, Ordering::SeqCst),
            2 => word2.fetch_or(oparg, Ordering::SeqCst),
            3 => word2.fetch_and(!oparg, Ordering::SeqCst),
            4 => word2.fetch_xor(oparg, Ordering::SeqCst),
            _ => return err(libc::ENOSYS),
        } as i32;
        let cond = match cmp {
            0 => old == cmparg,
            1 => old != cmparg,
            2 => old < cmparg,
            3 => old <= cmparg,
            4 => old > cmparg,
            5 => old >= cmparg,
            _ => return err(libc::ENOSYS),
        };
        let mut n = Self::wake_locked(mem, &mut q, addr, nwake, u32::MAX);
        if cond {
            n += Self::wake_locked(mem, &mut q, addr2, nwake2, u32::MAX);
        }
        Ok(u64::from(n))
    }
}

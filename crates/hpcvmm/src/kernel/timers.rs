//! Interval timers (alarm, setitimer) and POSIX timers (timer_create with SIGEV_SIGNAL,
//! SIGEV_THREAD_ID or SIGEV_NONE) of a thread group. The VMM's signal pump thread fires them:
//! [`Timers::fire_due`] returns the signals to send and [`Timers::next_wake`] when to look
//! again. Wall-clock timers (REALTIME, MONOTONIC, BOOTTIME) fire on time; CPU-time timers
//! (ITIMER_VIRTUAL, ITIMER_PROF, CLOCK_PROCESS_CPUTIME_ID) compare with the process CPU clock,
//! which the pump samples every [`CPU_POLL`] while one is armed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::signals::{SigInfo, Target, SI_KERNEL};
use super::{err, Errno};

/// How often armed CPU-time timers are checked.
pub const CPU_POLL: Duration = Duration::from_millis(5);

pub const SIGEV_SIGNAL: i32 = 0;
pub const SIGEV_NONE: i32 = 1;
pub const SIGEV_THREAD_ID: i32 = 4;

/// Where a timer's deadline lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Wall(Instant),
    /// Process CPU time, in nanoseconds.
    Cpu(u64),
}

#[derive(Clone, Copy, Debug)]
struct Timer {
    clock: i32,
    next: Option<When>,
    interval: Duration,
    /// SIGEV_NONE: no signal.
    signo: i32,
    target: Target,
    value: u64,
    overrun: i32,
    /// SI_TIMER siginfo (POSIX timer) or SI_KERNEL (itimers).
    posix: bool,
}

/// Timer ids of the itimers inside the same map (negative: never a timer_create id).
const ITIMER_BASE: i32 = -10;

#[derive(Debug, Default)]
struct State {
    timers: BTreeMap<i32, Timer>,
    next_id: i32,
}

/// The thread group's timers.
#[derive(Debug, Default)]
pub struct Timers {
    state: Mutex<State>,
}

/// What `timer_create` asks for.
#[derive(Clone, Copy, Debug)]
pub struct SigEvent {
    pub notify: i32,
    pub signo: i32,
    pub value: u64,
    pub tid: i32,
}

fn cpu_clock(clock: i32) -> bool {
    clock == libc::CLOCK_PROCESS_CPUTIME_ID
}

impl Timers {
    fn remaining(t: &Timer, now: Instant, cpu_ns: u64) -> Duration {
        match t.next {
            None => Duration::ZERO,
            Some(When::Wall(d)) => d
                .saturating_duration_since(now)
                .max(Duration::from_nanos(1)),
            Some(When::Cpu(c)) => Duration::from_nanos(c.saturating_sub(cpu_ns).max(1)),
        }
    }

    fn arm(t: &mut Timer, value: Duration, interval: Duration, now: Instant, cpu_ns: u64) {
        t.interval = interval;
        t.overrun = 0;
        t.next = if value.is_zero() {
            None
        } else if cpu_clock(t.clock) {
            Some(When::Cpu(cpu_ns.saturating_add(value.as_nanos() as u64)))
        } else {
            Some(When::Wall(now + value))
        };
    }

    /// setitimer/alarm: `which` 0 (REAL), 1 (VIRTUAL), 2 (PROF). Returns the old
    /// (value, interval).
    pub fn set_itimer(
        &self,
        which: i32,
        value: Duration,
        interval: Duration,
        now: Instant,
        cpu_ns: u64,
    ) -> Result<(Duration, Duration), Errno> {
        let (signo, clock) = match which {
            0 => (libc::SIGALRM, libc::CLOCK_MONOTONIC),
            1 => (libc::SIGVTALRM, libc::CLOCK_PROCESS_CPUTIME_ID),
            2 => (libc::SIGPROF, libc::CLOCK_PROCESS_CPUTIME_ID),
            _ => return err(libc::EINVAL),
        };
        let mut s = self.state.lock().unwrap();
        let t = s.timers.entry(ITIMER_BASE - which).or_insert(Timer {
            clock,
            next: None,
            interval: Duration::ZERO,
            signo,
            target: Target::Process,
            value: 0,
            overrun: 0,
            posix: false,
        });
        let old = (Self::remaining(t, now, cpu_ns), t.interval);
        Self::arm(t, value, interval, now, cpu_ns);
        Ok(old)
    }

    pub fn get_itimer(
        &self,
        which: i32,
        now: Instant,
        cpu_ns: u64,
    ) -> Result<(Duration, Duration), Errno> {
        if !(0..=2).contains(&which) {
            return err(libc::EINVAL);
        }
        let s = self.state.lock().unwrap();
        Ok(s.timers
            .get(&(ITIMER_BASE - which))
            .map(|t| (Self::remaining(t, now, cpu_ns), t.interval))
            .unwrap_or_default())
    }

    /// timer_create: a new timer id.
    pub fn create(&self, clock: i32, ev: SigEvent, pid: i32) -> Result<i32, Errno> {
        match clock {
            libc::CLOCK_REALTIME
            | libc::CLOCK_MONOTONIC
            | libc::CLOCK_BOOTTIME
            | libc::CLOCK_PROCESS_CPUTIME_ID => {}
            _ => return err(libc::EINVAL),
        }
        let target = match ev.notify {
            SIGEV_SIGNAL | SIGEV_NONE => Target::Process,
            SIGEV_THREAD_ID => Target::Thread(ev.tid),
            _ => return err(libc::EINVAL),
        };
        if ev.notify != SIGEV_NONE && !(1..=64).contains(&ev.signo) {
            return err(libc::EINVAL);
        }
        let _ = pid;
        let mut s = self.state.lock().unwrap();
        if s.timers.len() > 4096 {
            return err(libc::EAGAIN);
        }
        let id = s.next_id;
        s.next_id += 1;
        s.timers.insert(
            id,
            Timer {
                clock,
                next: None,
                interval: Duration::ZERO,
                signo: if ev.notify == SIGEV_NONE { 0 } else { ev.signo },
                target,
                value: ev.value,
                overrun: 0,
                posix: true,
            },
        );
        Ok(id)
    }

    fn posix_mut(s: &mut State, id: i32) -> Result<&mut Timer, Errno> {
        if id < 0 {
            return err(libc::EINVAL);
        }
        s.timers.get_mut(&id).ok_or(Errno(libc::EINVAL))
    }

    /// timer_settime with a relative `value` (the caller converts TIMER_ABSTIME). Returns the
    /// old (remaining, interval).
    pub fn settime(
        &self,
        id: i32,
        value: Duration,
        interval: Duration,
        now: Instant,
        cpu_ns: u64,
    ) -> Result<(Duration, Duration), Errno> {
        let mut s = self.state.lock().unwrap();
        let t = Self::posix_mut(&mut s, id)?;
        let old = (Self::remaining(t, now, cpu_ns), t.interval);
        Self::arm(t, value, interval, now, cpu_ns);
        Ok(old)
    }

    pub fn gettime(
        &self,
        id: i32,
        now: Instant,
        cpu_ns: u64,
    ) -> Result<(Duration, Duration), Errno> {
        let mut s = self.state.lock().unwrap();
        let t = Self::posix_mut(&mut s, id)?;
        Ok((Self::remaining(t, now, cpu_ns), t.interval))
    }

    pub fn clock_of(&self, id: i32) -> Result<i32, Errno> {
        let mut s = self.state.lock().unwrap();
        Ok(Self::posix_mut(&mut s, id)?.clock)
    }

    pub fn overrun(&self, id: i32) -> Result<i32, Errno> {
        let mut s = self.state.lock().unwrap();
        Ok(Self::posix_mut(&mut s, id)?.overrun)
    }

    pub fn delete(&self, id: i32) -> Result<(), Errno> {
        let mut s = self.state.lock().unwrap();
        Self::posix_mut(&mut s, id)?;
        s.timers.remove(&id);
        Ok(())
    }

    /// Whether a CPU-time timer is armed (the pump then samples the CPU clock).
    pub fn cpu_armed(&self) -> bool {
        let s = self.state.lock().unwrap();
        s.timers
            .values()
            .any(|t| matches!(t.next, Some(When::Cpu(_))))
    }

    /// The earliest wall-clock deadline.
    pub fn next_wake(&self) -> Option<Instant> {
        let s = self.state.lock().unwrap();
        s.timers
            .values()
            .filter_map(|t| match t.next {
                Some(When::Wall(d)) => Some(d),
                _ => None,
            })
            .min()
    }

    /// Expire every due timer: the signals to send. Periodic timers re-arm; expiries missed
    /// in between count as overruns (one signal per pump pass, as Linux gives one per timer).
    pub fn fire_due(&self, now: Instant, cpu_ns: u64) -> Vec<(Target, SigInfo)> {
        let mut out = Vec::new();
        let mut s = self.state.lock().unwrap();
        for (&id, t) in s.timers.iter_mut() {
            let due = match t.next {
                Some(When::Wall(d)) => d <= now,
                Some(When::Cpu(c)) => c <= cpu_ns,
                None => false,
            };
            if !due {
                continue;
            }
            let mut overrun = 0i64;
            t.next = if t.interval.is_zero() {
                None
            } else {
                let iv = t.interval.as_nanos().max(1);
                Some(match t.next.expect("due") {
                    When::Wall(d) => {
                        let late = now.duration_since(d).as_nanos();
                        let n = late / iv;
                        overrun = n as i64;
                        When::Wall(d + Duration::from_nanos(((n + 1) * iv) as u64))
                    }
                    When::Cpu(c) => {
                        let late = u128::from(cpu_ns - c);
                        let n = late / iv;
                        overrun = n as i64;
                        When::Cpu(c + ((n + 1) * iv) as u64)
                    }
                })
            };
            t.overrun = overrun.min(i64::from(i32::MAX)) as i32;
            if t.signo == 0 {
                continue;
            }
            let info = if t.posix {
                SigInfo::timer(t.signo, id, t.overrun, t.value)
            } else {
                SigInfo::fault(t.signo, SI_KERNEL, 0)
            };
            out.push((t.target, info));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itimers_fire_rearm_and_report_what_is_left() {
        let t = Timers::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            t.set_itimer(0, ms(100), ms(50), t0, 0).unwrap(),
            (Duration::ZERO, Duration::ZERO)
        );
        assert_eq!(t.next_wake(), Some(t0 + ms(100)));
        assert!(t.fire_due(t0 + ms(99), 0).is_empty());
        let f = t.fire_due(t0 + ms(100), 0);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].1.signo, libc::SIGALRM);
        assert_eq!(t.next_wake(), Some(t0 + ms(150)));
        let (left, iv) = t.get_itimer(0, t0 + ms(120), 0).unwrap();
        assert_eq!((left, iv), (ms(30), ms(50)));
        // Disarm.
        t.set_itimer(0, Duration::ZERO, Duration::ZERO, t0, 0)
            .unwrap();
        assert_eq!(t.next_wake(), None);
        assert!(t.set_itimer(3, ms(1), ms(1), t0, 0).is_err());
    }

    #[test]
    fn posix_timers_count_overruns_and_cpu_timers_use_cpu_time() {
        let t = Timers::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let ev = SigEvent {
            notify: SIGEV_SIGNAL,
            signo: 40,
            value: 77,
            tid: 0,
        };
        let id = t.create(libc::CLOCK_MONOTONIC, ev, 1000).unwrap();
        t.settime(id, ms(10), ms(10), t0, 0).unwrap();
        let f = t.fire_due(t0 + ms(35), 0);
        assert_eq!(f[0].1, SigInfo::timer(40, id, 2, 77));
        assert_eq!(t.overrun(id).unwrap(), 2);
        let c = t.create(libc::CLOCK_PROCESS_CPUTIME_ID, ev, 1000).unwrap();
        t.settime(c, ms(5), Duration::ZERO, t0, 1_000).unwrap();
        assert!(t.cpu_armed());
        assert!(t
            .fire_due(t0, 1_000 + 4_999_999)
            .iter()
            .all(|(_, i)| i.fields[0] as i32 != c));
        assert!(t
            .fire_due(t0, 1_000 + 5_000_000)
            .iter()
            .any(|(_, i)| i.fields[0] as i32 == c));
        assert!(!t.cpu_armed());
        t.delete(id).unwrap();
        assert_eq!(t.delete(id), Err(Errno(libc::EINVAL)));
        assert_eq!(
            t.create(libc::CLOCK_THREAD_CPUTIME_ID, ev, 1),
            Err(Errno(libc::EINVAL))
        );
    }
}

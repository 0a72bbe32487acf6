//! The guest memory the kernel layer sees: a trait over "guest physical addresses to host
//! bytes" with bounds-checked accessors, implemented by the VM's real memory
//! ([`crate::memory::GuestMemory`]) and, in unit tests, by a plain `Vec`-backed [`VecMemory`].
//!
//! Guest structs cross this boundary only as [`Plain`] types: plain data without padding, for
//! which every bit pattern is valid (reading a padded struct's padding from guest memory
//! would be undefined behaviour; vm-memory's `ByteValued` states the same contract).

use crate::memory::{CStrError, Efault};

/// Plain old data that may be copied to and from guest memory byte for byte.
///
/// # Safety
/// Implementors have no padding bytes, no pointers/references, and every bit pattern is a
/// valid value. Use [`plain!`] for structs: it checks at compile time that the size equals
/// the sum of the listed field sizes (no padding).
pub unsafe trait Plain: Copy + Send + Sync + 'static {}

macro_rules! plain_primitive {
    ($($t:ty),*) => { $(
        // SAFETY: primitive integers have no padding and every bit pattern is valid.
        unsafe impl Plain for $t {}
    )* };
}
plain_primitive!(u8, i8, u16, i16, u32, i32, u64, i64, usize, isize);

// SAFETY: an array of padding-free plain elements has no padding either.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

/// Declare `$t` plain; `[$f,...]` are its fields' types in order. Fails to compile if the
/// struct is larger than its fields (it has padding).
#[macro_export]
macro_rules! plain {
    ($($t:ty => [$($f:ty),* $(,)?]);* $(;)?) => { $(
        const _: () = assert!(
            std::mem::size_of::<$t>() == 0 $(+ std::mem::size_of::<$f>())*,
            concat!(stringify!($t), " has padding: it may not cross the guest boundary"),
        );
        // SAFETY: the assertion above proves there is no padding; all fields are integers
        // (or arrays of them), for which every bit pattern is valid.
        unsafe impl $crate::kernel::mem::Plain for $t {}
    )* };
}

plain! {
    libc::timespec => [i64, i64];
    libc::timeval => [i64, i64];
    libc::stat => [[u64; 3], [u32; 4], [u64; 4], [i64; 6], [i64; 3]];
    libc::utsname => [[[libc::c_char; 65]; 6]];
    libc::rusage => [libc::timeval, libc::timeval, [i64; 14]];
    libc::tms => [[libc::clock_t; 4]];
}

/// Bytes of `v` (a [`Plain`] value).
pub fn bytes_of<T: Plain>(v: &T) -> &[u8] {
    // SAFETY: T is Plain: no padding, so every byte of it is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Guest memory as the kernel layer uses it. Addresses are guest physical (= guest virtual:
/// the HPC VMM identity-maps user memory). "User" accessors are confined to the range the
/// guest program may name in a system call; `system_*` ones reach the VMM's own structures.
pub trait GuestRam: Send + Sync {
    /// Host pointer to `[addr, addr+len)` anywhere in guest memory, if it is backed by one
    /// host mapping (one region).
    fn host_range(&self, addr: u64, len: u64) -> Result<*mut u8, Efault>;

    /// `[lo, hi)`: guest memory a system call argument may point into.
    fn user_bounds(&self) -> (u64, u64);

    /// The window of memory shared with other VMs ([`crate::shmem`]); none by default.
    fn shared(&self) -> Option<&crate::shmem::SharedWindow> {
        None
    }

    /// Check that `[addr, addr+len)` lies inside user memory.
    fn check(&self, addr: u64, len: u64) -> Result<(), Efault> {
        let (lo, hi) = self.user_bounds();
        match addr.checked_add(len) {
            Some(end) if addr >= lo && end <= hi => Ok(()),
            _ => Err(Efault { addr, len }),
        }
    }

    /// Host pointer to user memory `[addr, addr+len)`. The guest may change the bytes
    /// concurrently: hand the pointer only to copies (host system calls, volatile access).
    fn host_ptr(&self, addr: u64, len: u64) -> Result<*mut u8, Efault> {
        self.check(addr, len)?;
        self.host_range(addr, len)
    }

    /// Host pointer to any guest memory, for the VMM's own structures.
    fn system_ptr(&self, addr: u64, len: u64) -> Result<*mut u8, Efault> {
        self.host_range(addr, len)
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Efault> {
        let p = self.host_ptr(addr, buf.len() as u64)?;
        // SAFETY: `p..p+len` is checked guest memory; `buf` is ours and does not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Efault> {
        let p = self.host_ptr(addr, buf.len() as u64)?;
        // SAFETY: `p..p+len` is checked guest memory; `buf` does not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
        Ok(())
    }

    fn read_vec(&self, addr: u64, len: u64) -> Result<Vec<u8>, Efault> {
        self.check(addr, len)?;
        let mut v = vec![0u8; len as usize];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    fn read_u64(&self, addr: u64) -> Result<u64, Efault> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_u32(&self, addr: u64) -> Result<u32, Efault> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn write_u64(&self, addr: u64, v: u64) -> Result<(), Efault> {
        self.write(addr, &v.to_le_bytes())
    }

    fn write_u32(&self, addr: u64, v: u32) -> Result<(), Efault> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Fill user memory `[addr, addr+len)` with zeroes.
    fn zero(&self, addr: u64, len: u64) -> Result<(), Efault> {
        let p = self.host_ptr(addr, len)?;
        // SAFETY: checked guest memory; zeroing is what the guest asked for.
        unsafe { std::ptr::write_bytes(p, 0, len as usize) };
        Ok(())
    }

    /// Copy `len` bytes inside user memory (overlap allowed).
    fn copy_within(&self, src: u64, dst: u64, len: u64) -> Result<(), Efault> {
        let s = self.host_ptr(src, len)?;
        let d = self.host_ptr(dst, len)?;
        // SAFETY: both ranges are checked guest memory; `copy` handles overlap.
        unsafe { std::ptr::copy(s, d, len as usize) };
        Ok(())
    }

    /// Read a NUL-terminated string of at most `max` bytes from user memory. A string that
    /// runs off the end of user memory is a fault, as on Linux.
    fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, CStrError> {
        self.check(addr, 1).map_err(|_| CStrError::Fault)?;
        let limit = self.user_bounds().1;
        let mut out = Vec::new();
        let mut cur = addr;
        while cur < limit {
            let chunk = (256 - (cur % 256)).min(limit - cur);
            let buf = self.read_vec(cur, chunk).map_err(|_| CStrError::Fault)?;
            if let Some(pos) = buf.iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..pos]);
                if out.len() > max {
                    return Err(CStrError::TooLong);
                }
                return Ok(out);
            }
            out.extend_from_slice(&buf);
            if out.len() > max {
                return Err(CStrError::TooLong);
            }
            cur += chunk;
        }
        Err(CStrError::Fault)
    }
}

impl dyn GuestRam + '_ {
    /// Read a [`Plain`] value from user memory.
    pub fn get<T: Plain>(&self, addr: u64) -> Result<T, Efault> {
        let p = self.host_ptr(addr, std::mem::size_of::<T>() as u64)?;
        // SAFETY: checked guest memory of T's size; T is Plain, so any bytes are a valid T.
        Ok(unsafe { std::ptr::read_unaligned(p as *const T) })
    }

    /// Write a [`Plain`] value to user memory.
    pub fn put<T: Plain>(&self, addr: u64, v: &T) -> Result<(), Efault> {
        self.write(addr, bytes_of(v))
    }
}

impl GuestRam for crate::memory::GuestMemory {
    fn host_range(&self, addr: u64, len: u64) -> Result<*mut u8, Efault> {
        if let Some(w) = self.shared_window().filter(|w| w.contains(addr)) {
            return w.host_range(addr, len).ok_or(Efault { addr, len });
        }
        self.system_ptr(addr, len)
    }

    fn user_bounds(&self) -> (u64, u64) {
        crate::memory::GuestMemory::user_bounds(self)
    }

    fn shared(&self) -> Option<&crate::shmem::SharedWindow> {
        self.shared_window()
    }

    /// User memory, or a mapped part of the shared window.
    fn check(&self, addr: u64, len: u64) -> Result<(), Efault> {
        if let Some(w) = self.shared_window().filter(|w| w.contains(addr)) {
            return w
                .host_range(addr, len)
                .map(|_| ())
                .ok_or(Efault { addr, len });
        }
        crate::memory::GuestMemory::check(self, addr, len)
    }
}

/// Guest memory in a plain heap allocation: the kernel layer's unit tests run system calls
/// against it without a VM. `[0, size)` exists; `[user_lo, size)` is user memory.
pub struct VecMemory {
    /// The allocation (from `Box::into_raw`, freed on drop): reached only through raw
    /// pointers, like the VM's guest memory, which the guest may write at any time.
    words: *mut [u64],
    user_lo: u64,
}

impl VecMemory {
    pub fn new(size: u64, user_lo: u64) -> Self {
        let b = vec![0u64; size.div_ceil(8) as usize].into_boxed_slice();
        VecMemory {
            words: Box::into_raw(b),
            user_lo,
        }
    }

    fn size(&self) -> u64 {
        self.words.len() as u64 * 8
    }
}

impl Drop for VecMemory {
    fn drop(&mut self) {
        // SAFETY: `words` came from Box::into_raw in `new` and is freed only here.
        drop(unsafe { Box::from_raw(self.words) });
    }
}

// SAFETY: the allocation is owned by this value and only reached through raw pointers handed
// to copies, the same contract as the VM's shared guest memory.
unsafe impl Send for VecMemory {}
// SAFETY: as for Send: concurrent access goes through raw pointers only.
unsafe impl Sync for VecMemory {}

impl GuestRam for VecMemory {
    fn host_range(&self, addr: u64, len: u64) -> Result<*mut u8, Efault> {
        match addr.checked_add(len) {
            Some(end) if end <= self.size() => {
                // SAFETY: `[addr, end)` lies inside the allocation.
                Ok(unsafe { self.words.cast::<u8>().add(addr as usize) })
            }
            _ => Err(Efault { addr, len }),
        }
    }

    fn user_bounds(&self) -> (u64, u64) {
        (self.user_lo, self.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_round_trip_and_bounds_are_checked() {
        let m = VecMemory::new(1 << 20, 4096);
        let m: &dyn GuestRam = &m;
        let ts = libc::timespec {
            tv_sec: 7,
            tv_nsec: 9,
        };
        m.put(8192, &ts).unwrap();
        let back: libc::timespec = m.get(8192).unwrap();
        assert_eq!((back.tv_sec, back.tv_nsec), (7, 9));
        assert!(m.get::<u64>(0).is_err(), "below user memory");
        assert!(m.get::<u64>((1 << 20) - 4).is_err(), "runs off the end");
        assert!(m.get::<u64>(u64::MAX - 2).is_err(), "wraps");
        m.write(5000, b"hi\0").unwrap();
        assert_eq!(m.read_cstr(5000, 10).unwrap(), b"hi");
        m.write((1 << 20) - 2, b"ab").unwrap();
        assert_eq!(m.read_cstr((1 << 20) - 2, 10), Err(CStrError::Fault));
    }
}

//! The guest's virtual address space bookkeeping: which page ranges are mapped (image, heap,
//! mmap areas, stacks) as [`Vma`]s with their protection and backing, where brk is, and which
//! free memory is already known to be zero.
//!
//! Guest virtual addresses equal guest physical ones, so "mapping" is only bookkeeping: the
//! page tables always map all of usable memory. What matters is handing out non-overlapping
//! ranges, giving the guest zeroed memory as Linux does, and answering ENOMEM when memory runs
//! out. mprotect is accepted but not enforced (pages are mapped RWX with large pages).

use std::collections::BTreeMap;

pub const PAGE: u64 = 4096;

/// A set of disjoint half-open ranges.
#[derive(Clone, Debug, Default)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>, // start -> end
}

impl RangeSet {
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with overlapping or adjacent neighbours.
        let overlapping: Vec<(u64, u64)> = self
            .map
            .range(..=end)
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.map.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.map.insert(start, end);
    }

    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .map
            .range(..end)
            .rev()
            .take_while(|(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.map.remove(&s);
            if s < start {
                self.map.insert(s, start);
            }
            if e > end {
                self.map.insert(end, e);
            }
        }
    }

    /// True if any part of `[start, end)` is in the set.
    pub fn intersects(&self, start: u64, end: u64) -> bool {
        self.map
            .range(..end)
            .next_back()
            .is_some_and(|(_, &e)| e > start)
    }

    /// True if all of `[start, end)` is in the set.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        self.map
            .range(..=start)
            .next_back()
            .is_some_and(|(_, &e)| e >= end)
    }

    /// The parts of `[start, end)` that are in the set.
    pub fn parts(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let first = self
            .map
            .range(..=start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(start);
        for (&s, &e) in self.map.range(first..end) {
            let (a, b) = (s.max(start), e.min(end));
            if a < b {
                out.push((a, b));
            }
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    pub fn total(&self) -> u64 {
        self.map.iter().map(|(s, e)| e - s).sum()
    }
}

/// What a mapping's pages are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmaBacking {
    /// Private anonymous memory (heap, stacks, MAP_ANONYMOUS).
    Anonymous,
    /// A private copy of a file's bytes from `offset`, read at mmap time (the program image,
    /// MAP_PRIVATE file mappings, read-only MAP_SHARED ones).
    FileCopy { path: Option<String>, offset: u64 },
    /// A shared mapping of a host file or memfd. Not created yet: writable MAP_SHARED file
    /// mappings are ENODEV until shared regions exist.
    SharedFile { path: Option<String>, offset: u64 },
    /// Memory in its own KVM memory slot (a region shared between VMs). Not created yet.
    Region { slot: u32 },
}

/// The attributes of a mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmaAttrs {
    /// PROT_READ | PROT_WRITE | PROT_EXEC bits, as the guest asked. Recorded, not enforced:
    /// user memory is mapped RWX with large pages.
    pub prot: i32,
    pub backing: VmaBacking,
    /// What /proc/self/maps would name it ("[heap]", "[stack]").
    pub label: Option<&'static str>,
}

impl VmaAttrs {
    /// Private anonymous read-write memory.
    pub fn anonymous() -> Self {
        VmaAttrs {
            prot: libc::PROT_READ | libc::PROT_WRITE,
            backing: VmaBacking::Anonymous,
            label: None,
        }
    }
}

/// One mapping: `[start, end)` with its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub attrs: VmaAttrs,
}

impl Vma {
    /// The part `[from, to)` of this mapping (file offsets follow the cut).
    fn slice(&self, from: u64, to: u64) -> Vma {
        let mut attrs = self.attrs.clone();
        match &mut attrs.backing {
            VmaBacking::FileCopy { offset, .. } | VmaBacking::SharedFile { offset, .. } => {
                *offset += from - self.start
            }
            VmaBacking::Anonymous | VmaBacking::Region { .. } => {}
        }
        Vma {
            start: from,
            end: to,
            attrs,
        }
    }
}

/// The mappings of an address space, disjoint, keyed by start.
#[derive(Clone, Debug, Default)]
pub struct VmaMap {
    map: BTreeMap<u64, Vma>,
}

impl VmaMap {
    /// Forget every mapping inside `[start, end)`, splitting the ones that straddle it.
    pub fn clear(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let hit: Vec<u64> = self
            .map
            .range(..end)
            .rev()
            .take_while(|(_, v)| v.end > start)
            .map(|(&s, _)| s)
            .collect();
        for s in hit {
            let v = self.map.remove(&s).expect("key just listed");
            if v.start < start {
                self.map.insert(v.start, v.slice(v.start, start));
            }
            if v.end > end {
                self.map.insert(end, v.slice(end, v.end));
            }
        }
    }

    /// Map `[start, end)` with `attrs`, replacing what was there; adjacent anonymous
    /// mappings with equal attributes merge.
    pub fn set(&mut self, start: u64, end: u64, attrs: VmaAttrs) {
        if start >= end {
            return;
        }
        self.clear(start, end);
        let mut v = Vma { start, end, attrs };
        if v.attrs.backing == VmaBacking::Anonymous {
            if let Some((&ls, l)) = self.map.range(..start).next_back() {
                if l.end == start && l.attrs == v.attrs {
                    v.start = ls;
                    self.map.remove(&ls);
                }
            }
            if let Some(r) = self.map.get(&end) {
                if r.attrs == v.attrs {
                    v.end = r.end;
                    self.map.remove(&end);
                }
            }
        }
        self.map.insert(v.start, v);
    }

    /// The mapping containing `addr`.
    pub fn get(&self, addr: u64) -> Option<&Vma> {
        self.map
            .range(..=addr)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| addr < v.end)
    }

    /// Record protection `prot` on `[start, end)`, which must be fully mapped.
    pub fn protect(&mut self, start: u64, end: u64, prot: i32) -> Result<(), MmError> {
        let mut at = start;
        let mut parts = Vec::new();
        while at < end {
            let v = self.get(at).ok_or(MmError::NoMem)?;
            let to = v.end.min(end);
            let mut p = v.slice(at, to);
            p.attrs.prot = prot;
            parts.push(p);
            at = to;
        }
        for p in parts {
            self.set(p.start, p.end, p.attrs);
        }
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }
}

/// Errors of address-space operations, as the errno the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmError {
    NoMem,
    Inval,
    Exists,
}

/// The guest address space.
#[derive(Debug)]
pub struct AddressSpace {
    low: u64,
    high: u64,
    mapped: RangeSet,
    /// The same ranges as `mapped`, with protection and backing.
    vmas: VmaMap,
    /// Free memory whose contents may be non-zero (was used, then unmapped).
    dirty: RangeSet,
    brk_start: u64,
    brk: u64,
    /// Highest address the heap may reach (below the mmap area / stack).
    peak: u64,
    /// Mappings in the window shared with other VMs (issue 12; see [`SharedArea`]).
    pub shared: SharedArea,
}

impl AddressSpace {
    /// `[low, high)` is usable memory; `image` is already mapped.
    pub fn new(low: u64, high: u64, image: (u64, u64)) -> Self {
        let attrs = VmaAttrs {
            prot: libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            backing: VmaBacking::FileCopy {
                path: None,
                offset: 0,
            },
            label: None,
        };
        Self::with_images(low, high, &[(image.0, image.1, attrs)], image.1)
    }

    /// `[low, high)` is usable memory; `images` (the program, its interpreter) are already
    /// mapped; the program break starts at `brk_start`.
    pub fn with_images(
        low: u64,
        high: u64,
        images: &[(u64, u64, VmaAttrs)],
        brk_start: u64,
    ) -> Self {
        let mut mapped = RangeSet::default();
        let mut vmas = VmaMap::default();
        for (s, e, attrs) in images {
            mapped.insert(*s, *e);
            vmas.set(*s, *e, attrs.clone());
        }
        AddressSpace {
            low,
            high,
            mapped,
            vmas,
            dirty: RangeSet::default(),
            brk_start,
            brk: brk_start,
            peak: 0,
            shared: SharedArea::default(),
        }
    }

    pub fn high(&self) -> u64 {
        self.high
    }

    /// Bytes currently mapped (image, heap, mmaps, stacks).
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped.total()
    }

    pub fn peak_bytes(&self) -> u64 {
        self.peak
    }

    fn note_peak(&mut self) {
        self.peak = self.peak.max(self.mapped.total());
    }

    /// Ranges inside `[start,end)` that must be zeroed before handing them out.
    fn take_dirty(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let parts = self.dirty.parts(start, end);
        self.dirty.remove(start, end);
        parts
    }

    /// The mappings, in address order.
    pub fn vmas(&self) -> &VmaMap {
        &self.vmas
    }

    /// Map `len` bytes of fresh anonymous read-write memory; returns the address and the
    /// ranges the caller must zero.
    pub fn map(
        &mut self,
        hint: u64,
        len: u64,
        fixed: bool,
        noreplace: bool,
    ) -> Result<(u64, Vec<(u64, u64)>), MmError> {
        self.map_with(hint, len, fixed, noreplace, VmaAttrs::anonymous())
    }

    /// [`AddressSpace::map`] with the mapping's protection and backing.
    pub fn map_with(
        &mut self,
        hint: u64,
        len: u64,
        fixed: bool,
        noreplace: bool,
        attrs: VmaAttrs,
    ) -> Result<(u64, Vec<(u64, u64)>), MmError> {
        let (at, z) = self.place(hint, len, fixed, noreplace)?;
        self.vmas.set(at, at + len.next_multiple_of(PAGE), attrs);
        Ok((at, z))
    }

    /// Record a protection change on `[addr, addr+len)` (mprotect); ENOMEM unless all of it
    /// is mapped.
    pub fn protect(&mut self, addr: u64, len: u64, prot: i32) -> Result<(), MmError> {
        if addr % PAGE != 0 {
            return Err(MmError::Inval);
        }
        let end = len
            .max(1)
            .checked_next_multiple_of(PAGE)
            .and_then(|l| addr.checked_add(l))
            .ok_or(MmError::NoMem)?;
        if !self.mapped.contains(addr, end) {
            return Err(MmError::NoMem);
        }
        self.vmas.protect(addr, end, prot)
    }

    /// Find room for `len` bytes and mark it mapped.
    fn place(
        &mut self,
        hint: u64,
        len: u64,
        fixed: bool,
        noreplace: bool,
    ) -> Result<(u64, Vec<(u64, u64)>), MmError> {
        if len == 0 {
            return Err(MmError::Inval);
        }
        let len = len.checked_next_multiple_of(PAGE).ok_or(MmError::NoMem)?;
        if fixed {
            if hint % PAGE != 0 {
                return Err(MmError::Inval);
            }
            let end = hint.checked_add(len).ok_or(MmError::NoMem)?;
            if hint < self.low || end > self.high {
                return Err(MmError::NoMem);
            }
            if self.mapped.intersects(hint, end) {
                if noreplace {
                    return Err(MmError::Exists);
                }
                // MAP_FIXED replaces: the old contents go away.
                let old = self.mapped.parts(hint, end);
                self.mapped.remove(hint, end);
                for (s, e) in old {
                    self.dirty.insert(s, e);
                }
            }
            self.mapped.insert(hint, end);
            let z = self.take_dirty(hint, end);
            self.note_peak();
            return Ok((hint, z));
        }
        let hint = hint & !(PAGE - 1);
        if hint >= self.low
            && hint.checked_add(len).is_some_and(|e| e <= self.high)
            && !self.mapped.intersects(hint, hint + len)
            && hint >= self.brk
        {
            self.mapped.insert(hint, hint + len);
            let z = self.take_dirty(hint, hint + len);
            self.note_peak();
            return Ok((hint, z));
        }
        // Top-down first fit, never below the heap's current end.
        let floor = self.brk.max(self.low);
        let mut top = self.high;
        let gaps: Vec<(u64, u64)> = self.mapped.iter().filter(|&(_, e)| e > floor).collect();
        for (s, e) in gaps.into_iter().rev() {
            if top >= e && top - e >= len {
                let at = top - len;
                self.mapped.insert(at, top);
                let z = self.take_dirty(at, top);
                self.note_peak();
                return Ok((at, z));
            }
            top = top.min(s);
        }
        if top >= floor && top - floor >= len {
            let at = top - len;
            self.mapped.insert(at, top);
            let z = self.take_dirty(at, top);
            self.note_peak();
            return Ok((at, z));
        }
        Err(MmError::NoMem)
    }

    pub fn unmap(&mut self, addr: u64, len: u64) -> Result<(), MmError> {
        if addr % PAGE != 0 || len == 0 {
            return Err(MmError::Inval);
        }
        let end = addr
            .checked_add(len.next_multiple_of(PAGE))
            .ok_or(MmError::Inval)?;
        for (s, e) in self.mapped.parts(addr, end) {
            self.dirty.insert(s, e);
        }
        self.mapped.remove(addr, end);
        self.vmas.clear(addr, end);
        Ok(())
    }

    pub fn is_mapped(&self, addr: u64, len: u64) -> bool {
        self.mapped.contains(addr, addr.saturating_add(len))
    }

    /// Resize a mapping. Returns the new address, ranges to zero, and an optional
    /// `(from, to, len)` copy the caller must perform (move).
    #[allow(clippy::type_complexity)]
    pub fn remap(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        may_move: bool,
    ) -> Result<(u64, Vec<(u64, u64)>, Option<(u64, u64, u64)>), MmError> {
        if old % PAGE != 0 || new_len == 0 {
            return Err(MmError::Inval);
        }
        let old_len = old_len.next_multiple_of(PAGE);
        let new_len = new_len
            .checked_next_multiple_of(PAGE)
            .ok_or(MmError::NoMem)?;
        if !self.mapped.contains(old, old + old_len) {
            return Err(MmError::Inval);
        }
        if new_len <= old_len {
            self.unmap(old + new_len, old_len - new_len).ok();
            return Ok((old, Vec::new(), None));
        }
        let grow_end = old.checked_add(new_len).ok_or(MmError::NoMem)?;
        let attrs = self
            .vmas
            .get(old)
            .map(|v| v.slice(old, v.end).attrs)
            .unwrap_or_else(VmaAttrs::anonymous);
        if grow_end <= self.high && !self.mapped.intersects(old + old_len, grow_end) {
            self.mapped.insert(old + old_len, grow_end);
            let mut tail = Vma {
                start: old,
                end: grow_end,
                attrs: attrs.clone(),
            }
            .slice(old + old_len, grow_end)
            .attrs;
            if tail.backing != VmaBacking::Anonymous {
                // Growing a file copy past its end: the new pages are zero-filled memory.
                tail.backing = VmaBacking::Anonymous;
            }
            self.vmas.set(old + old_len, grow_end, tail);
            let z = self.take_dirty(old + old_len, grow_end);
            self.note_peak();
            return Ok((old, z, None));
        }
        if !may_move {
            return Err(MmError::NoMem);
        }
        let (at, z) = self.map_with(0, new_len, false, false, attrs)?;
        self.unmap(old, old_len)?;
        Ok((at, z, Some((old, at, old_len))))
    }

    fn heap() -> VmaAttrs {
        VmaAttrs {
            label: Some("[heap]"),
            ..VmaAttrs::anonymous()
        }
    }

    pub fn brk(&self) -> u64 {
        self.brk
    }

    /// Move the program break. Returns the new break (unchanged on failure, like Linux) and the
    /// ranges to zero.
    pub fn set_brk(&mut self, want: u64) -> (u64, Vec<(u64, u64)>) {
        if want < self.brk_start {
            return (self.brk, Vec::new());
        }
        let cur_end = self.brk.next_multiple_of(PAGE);
        let new_end = match want.checked_next_multiple_of(PAGE) {
            Some(e) => e,
            None => return (self.brk, Vec::new()),
        };
        if new_end > cur_end {
            if new_end > self.high || self.mapped.intersects(cur_end, new_end) {
                return (self.brk, Vec::new());
            }
            self.mapped.insert(cur_end, new_end);
            self.vmas.set(cur_end, new_end, Self::heap());
            let z = self.take_dirty(cur_end, new_end);
            self.brk = want;
            self.note_peak();
            return (want, z);
        }
        if new_end < cur_end {
            self.mapped.remove(new_end, cur_end);
            self.vmas.clear(new_end, cur_end);
            self.dirty.insert(new_end, cur_end);
        }
        self.brk = want;
        (want, Vec::new())
    }
}

// ---- mappings shared between VMs (issue 12) ----

/// The guest addresses of mappings shared with other VMs: `MAP_SHARED` file mappings and SysV
/// segments live in their own window above guest RAM ([`crate::shmem`]), not in the
/// identity-mapped RAM the rest of the address space manages. This is only their bookkeeping
/// (which ranges are taken, with what backing); the host mappings are the window's.
#[derive(Clone, Debug, Default)]
pub struct SharedArea {
    lo: u64,
    hi: u64,
    taken: RangeSet,
    vmas: VmaMap,
}

impl SharedArea {
    /// The area `[lo, hi)` (the window's guest addresses).
    pub fn new(lo: u64, hi: u64) -> Self {
        SharedArea {
            lo,
            hi,
            ..Default::default()
        }
    }

    /// True if `addr` is inside the area.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.lo && addr < self.hi
    }

    /// Take `len` bytes: at `hint` when `fixed` (which must lie inside the area and, with
    /// `noreplace`, be free), else the lowest free range.
    pub fn place(
        &mut self,
        hint: u64,
        len: u64,
        fixed: bool,
        noreplace: bool,
        attrs: VmaAttrs,
    ) -> Result<u64, MmError> {
        if len == 0 {
            return Err(MmError::Inval);
        }
        let len = len.checked_next_multiple_of(PAGE).ok_or(MmError::NoMem)?;
        let at = if fixed {
            if hint % PAGE != 0 {
                return Err(MmError::Inval);
            }
            let end = hint.checked_add(len).ok_or(MmError::NoMem)?;
            if !self.contains(hint) || end > self.hi {
                return Err(MmError::NoMem);
            }
            if noreplace && self.taken.intersects(hint, end) {
                return Err(MmError::Exists);
            }
            hint
        } else {
            let mut at = self.lo;
            for (s, e) in self.taken.iter() {
                if s >= at + len {
                    break;
                }
                at = at.max(e);
            }
            if at + len > self.hi {
                return Err(MmError::NoMem);
            }
            at
        };
        self.taken.insert(at, at + len);
        self.vmas.set(at, at + len, attrs);
        Ok(at)
    }

    /// Forget `[addr, addr+len)`; returns the parts that were taken (for the host unmap).
    pub fn unmap(&mut self, addr: u64, len: u64) -> Vec<(u64, u64)> {
        let end = addr.saturating_add(len.next_multiple_of(PAGE));
        let parts = self.taken.parts(addr, end);
        self.taken.remove(addr, end);
        self.vmas.clear(addr, end);
        parts
    }

    /// True if all of `[addr, addr+len)` is taken.
    pub fn is_mapped(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len.max(1))
            .is_some_and(|e| self.taken.contains(addr, e))
    }

    /// The shared mappings, in address order.
    pub fn vmas(&self) -> &VmaMap {
        &self.vmas
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn shared_area_places_lowest_first_and_unmaps_parts() {
        let mut a = SharedArea::new(1 << 30, 2 << 30);
        let attrs = || VmaAttrs {
            prot: 3,
            backing: VmaBacking::SharedFile {
                path: Some("/dev/shm/x".into()),
                offset: 0,
            },
            label: None,
        };
        let x = a.place(0, 5000, false, false, attrs()).unwrap();
        assert_eq!(x, 1 << 30);
        let y = a.place(0, 4096, false, false, attrs()).unwrap();
        assert_eq!(y, x + 8192);
        assert_eq!(a.unmap(x, 8192), vec![(x, x + 8192)]);
        assert_eq!(a.place(0, 4096, false, false, attrs()).unwrap(), x);
        assert_eq!(a.place(y, 4096, true, true, attrs()), Err(MmError::Exists));
        assert_eq!(
            a.place(1 << 20, 4096, true, false, attrs()),
            Err(MmError::NoMem)
        );
        assert_eq!(
            a.place(0, 2 << 30, false, false, attrs()),
            Err(MmError::NoMem)
        );
        assert!(a.is_mapped(y, 4096) && !a.is_mapped(y, 8192));
        assert_eq!(a.vmas().iter().count(), 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rangeset_merges_and_splits() {
        let mut r = RangeSet::default();
        r.insert(0, 10);
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(0, 20), (30, 40)]);
        r.remove(5, 35);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(0, 5), (35, 40)]);
        assert!(r.intersects(4, 6));
        assert!(!r.intersects(5, 35));
        assert!(r.contains(36, 40));
        assert!(!r.contains(30, 40));
        assert_eq!(r.parts(0, 100), vec![(0, 5), (35, 40)]);
    }

    #[test]
    fn mmap_munmap_reuse_zeroes_only_dirty_memory() {
        let mut a = AddressSpace::new(0x20_0000, 0x100_0000, (0x40_0000, 0x50_0000));
        let (p, z) = a.map(0, 0x1000, false, false).unwrap();
        assert_eq!(p, 0x100_0000 - 0x1000);
        assert!(z.is_empty(), "never-used memory is already zero");
        a.unmap(p, 0x1000).unwrap();
        let (q, z) = a.map(0, 0x1000, false, false).unwrap();
        assert_eq!(q, p);
        assert_eq!(z, vec![(p, p + 0x1000)]);
    }

    #[test]
    fn out_of_memory_and_bad_arguments() {
        let mut a = AddressSpace::new(0x20_0000, 0x40_0000, (0x20_0000, 0x21_0000));
        assert_eq!(a.map(0, 0x100_0000, false, false), Err(MmError::NoMem));
        assert_eq!(a.map(0x123, 0x1000, true, false), Err(MmError::Inval));
        assert_eq!(a.map(0, 0, false, false), Err(MmError::Inval));
        assert_eq!(a.map(0x20_0000, 0x1000, true, true), Err(MmError::Exists));
        assert_eq!(a.map(0x1000_0000, 0x1000, true, false), Err(MmError::NoMem));
        assert_eq!(a.unmap(0x123, 1), Err(MmError::Inval));
    }

    #[test]
    fn brk_grows_shrinks_and_refuses_collisions() {
        let mut a = AddressSpace::new(0x20_0000, 0x100_0000, (0x40_0000, 0x50_0000));
        assert_eq!(a.brk(), 0x50_0000);
        let (b, _) = a.set_brk(0x50_1234);
        assert_eq!(b, 0x50_1234);
        let (m, _) = a.map(0x60_0000, 0x1000, true, false).unwrap();
        assert_eq!(m, 0x60_0000);
        let (b, _) = a.set_brk(0x70_0000);
        assert_eq!(b, 0x50_1234, "heap may not grow over a mapping");
        let (b, _) = a.set_brk(0x50_0000);
        assert_eq!(b, 0x50_0000);
        let (b, z) = a.set_brk(0x50_2000);
        assert_eq!(b, 0x50_2000);
        assert_eq!(z, vec![(0x50_0000, 0x50_2000)]);
    }

    /// The VMAs cover exactly the mapped ranges.
    fn vmas_match(a: &AddressSpace) {
        let mut from_vmas = RangeSet::default();
        let mut last_end = 0;
        for v in a.vmas().iter() {
            assert!(v.start < v.end && v.start >= last_end, "{v:?}");
            last_end = v.end;
            from_vmas.insert(v.start, v.end);
        }
        assert_eq!(
            from_vmas.iter().collect::<Vec<_>>(),
            a.mapped.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn vmas_record_protection_and_backing_through_every_operation() {
        let mut a = AddressSpace::new(0x20_0000, 0x100_0000, (0x40_0000, 0x50_0000));
        vmas_match(&a);
        let file = VmaAttrs {
            prot: libc::PROT_READ,
            backing: VmaBacking::FileCopy {
                path: Some("/lib.so".into()),
                offset: 0x1000,
            },
            label: None,
        };
        let (p, _) = a.map_with(0x80_0000, 0x4000, true, false, file).unwrap();
        vmas_match(&a);
        // mprotect the middle page: three VMAs, file offsets following the cuts.
        a.protect(p + 0x1000, 0x1000, libc::PROT_NONE).unwrap();
        let v: Vec<_> = a.vmas().iter().filter(|v| v.start >= p).cloned().collect();
        assert_eq!(v.len(), 3, "{v:?}");
        assert_eq!(v[1].attrs.prot, libc::PROT_NONE);
        assert_eq!(
            v[2].attrs.backing,
            VmaBacking::FileCopy {
                path: Some("/lib.so".into()),
                offset: 0x3000
            }
        );
        assert_eq!(a.protect(0x90_0000, 0x1000, 0), Err(MmError::NoMem));
        assert_eq!(
            a.protect(p, u64::MAX, 0),
            Err(MmError::NoMem),
            "length wraps"
        );
        // munmap splits; brk makes a [heap] VMA; anonymous neighbours merge.
        a.unmap(p + 0x1000, 0x1000).unwrap();
        vmas_match(&a);
        a.set_brk(0x50_3000);
        assert_eq!(a.vmas().get(0x50_1000).unwrap().attrs.label, Some("[heap]"));
        a.set_brk(0x50_6000);
        assert_eq!(a.vmas().get(0x50_1000).unwrap().end, 0x50_6000);
        vmas_match(&a);
        // mremap keeps the attributes when it moves a mapping.
        let (q, _) = a.map(0xa0_0000, 0x1000, true, false).unwrap();
        a.protect(q, 0x1000, libc::PROT_READ).unwrap();
        a.map(0xa0_1000, 0x1000, true, false).unwrap();
        let (r, _, mv) = a.remap(q, 0x1000, 0x3000, true).unwrap();
        assert!(mv.is_some());
        assert_eq!(a.vmas().get(r).unwrap().attrs.prot, libc::PROT_READ);
        vmas_match(&a);
    }

    #[test]
    fn mremap_grows_in_place_or_moves() {
        let mut a = AddressSpace::new(0x20_0000, 0x100_0000, (0x40_0000, 0x50_0000));
        let (p, _) = a.map(0x80_0000, 0x1000, true, false).unwrap();
        let (q, _, mv) = a.remap(p, 0x1000, 0x3000, true).unwrap();
        assert_eq!((q, mv), (p, None));
        a.map(0x80_3000, 0x1000, true, false).unwrap();
        let (r, _, mv) = a.remap(p, 0x3000, 0x5000, true).unwrap();
        assert_ne!(r, p);
        assert_eq!(mv, Some((p, r, 0x3000)));
        assert_eq!(
            a.remap(r, 0x5000, 0x100_0000, false).unwrap_err(),
            MmError::NoMem
        );
    }
}

//! The BPF ring buffer's consumer side, read through its shared-memory mapping.
//!
//! aya's `RingBuf` publishes the consumer position after every record. Every
//! `bpf_ringbuf_reserve` in the kernel reads that position (to check for room), so while the
//! reader drains on one CPU, each record a guarded process submits on another CPU pulls the
//! cache line back: measured, that bouncing cost a guarded open more than the programs did.
//! This reader publishes once per batch instead; the kernel frees the batch's space a little
//! later, which a 16 MiB buffer does not miss.
//!
//! Layout (kernel/bpf/ringbuf.c): page 0 is the consumer position (mapped read-write); from
//! page 1, the producer position page then the data pages mapped twice in a row (read-only), so
//! a record that wraps around the end is still one contiguous slice. Each record is an 8-byte
//! header (`len | BUSY | DISCARD` as u32, then the page offset) and its data, 8-byte aligned.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

use aya::maps::MapData;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_LEN: usize = 8;

/// One `mmap`ed region, unmapped on drop.
struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a fresh shared mapping of the map's fd chosen by the kernel (no fixed
        // address), so no existing memory is touched; failure is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    fn base(&self) -> *const u8 {
        self.ptr.as_ptr().cast()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the region `mmap` returned; nothing borrows it past the reader that
        // owns this mapping (record slices are only lent inside `read_batch`).
        unsafe { libc::munmap(self.ptr.as_ptr(), self.len) };
    }
}

/// Reads a ring buffer map's records in batches, publishing the consumer position once per
/// batch. Pollable (`AsRawFd`): readable when records are pending.
pub(crate) struct RingReader {
    map: MapData,
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    mask: usize,
    /// Where this reader is; the kernel's copy lags until the end of a batch.
    pos: usize,
}

// SAFETY: the mappings are plain shared memory owned by this value, used through atomics and
// `&mut self` only; nothing in them is tied to the creating thread.
unsafe impl Send for RingReader {}

impl RingReader {
    /// Maps the ring buffer `map` (a `BPF_MAP_TYPE_RINGBUF`) for reading, from where its
    /// consumer position stands (a pinned map may hold records a previous reader left).
    pub(crate) fn new(map: MapData) -> io::Result<Self> {
        let size = map.info().map_err(io::Error::other)?.max_entries() as usize;
        if !size.is_power_of_two() {
            return Err(io::Error::other(format!(
                "ring buffer size {size} is not a power of two"
            )));
        }
        // SAFETY: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(io::Error::other)?;
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        let mut reader = Self {
            map,
            consumer,
            producer,
            page,
            mask: size - 1,
            pos: 0,
        };
        reader.pos = reader.consumer_pos().load(Ordering::Acquire);
        Ok(reader)
    }

    /// Drops every record committed so far unread: what a previous user of a reused map left
    /// (records of a session that is over, labelled for it).
    pub(crate) fn discard_pending(&mut self) {
        self.pos = self.producer_pos().load(Ordering::Acquire);
        self.consumer_pos().store(self.pos, Ordering::Release);
    }

    #[expect(clippy::cast_ptr_alignment, reason = "page-aligned, see SAFETY")]
    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the consumer page starts with the kernel's `unsigned long consumer_pos`,
        // page-aligned (so aligned for AtomicUsize) and mapped for as long as `self`.
        unsafe { &*self.consumer.base().cast::<AtomicUsize>() }
    }

    #[expect(clippy::cast_ptr_alignment, reason = "page-aligned, see SAFETY")]
    fn producer_pos(&self) -> &AtomicUsize {
        // SAFETY: as above, the producer page's `unsigned long producer_pos`; the kernel
        // writes it with release semantics.
        unsafe { &*self.producer.base().cast::<AtomicUsize>() }
    }

    /// Hands each committed record (at most `max`) to `each`, then publishes the new consumer
    /// position once. True when it stopped because nothing more was committed (the buffer is
    /// empty, or the next record is still being written).
    pub(crate) fn read_batch(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> bool {
        let start = self.pos;
        let mut producer = self.producer_pos().load(Ordering::Acquire);
        let mut read = 0;
        let emptied = loop {
            if self.pos == producer {
                // Caught up with what was seen: look once more before calling it empty.
                producer = self.producer_pos().load(Ordering::Acquire);
                if self.pos == producer {
                    break true;
                }
            }
            if read >= max {
                break false;
            }
            let offset = self.page + (self.pos & self.mask);
            // SAFETY: `offset` is within the first copy of the data pages (mask < size) and
            // 8-byte aligned (positions advance by multiples of 8), so the u32 header is in
            // the mapping and aligned; the kernel commits it with a full barrier (xchg), and
            // the acquire load makes the record's data visible after the busy bit clears.
            #[expect(clippy::cast_ptr_alignment, reason = "8-byte aligned, see SAFETY")]
            let header = unsafe { &*self.producer.base().add(offset).cast::<AtomicU32>() }
                .load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                break true;
            }
            let len = (header & !(BUSY_BIT | DISCARD_BIT)) as usize;
            if len > self.mask {
                // Not a header the kernel wrote: stop rather than read past the mapping.
                break true;
            }
            if header & DISCARD_BIT == 0 {
                // SAFETY: the record's data starts after its header and is at most `mask`
                // bytes long; the data pages are mapped twice in a row, so the slice stays
                // inside the mapping even when the record wraps around the end. The kernel
                // does not reuse it before the consumer position (published after this
                // batch, once `each` has returned) passes it.
                let data = unsafe {
                    std::slice::from_raw_parts(self.producer.base().add(offset + HEADER_LEN), len)
                };
                each(data);
                read += 1;
            }
            self.pos += (len + HEADER_LEN).next_multiple_of(8);
        };
        if self.pos != start {
            self.consumer_pos().store(self.pos, Ordering::Release);
        }
        emptied
    }
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

//@ stage 11
//! A memory slot's dirty log: one bit per page, set when the guest may
//! have written the page since userspace last read the log.
//!
//! The bits are set from the vCPU's page-fault path and from the module's
//! own writes to guest memory, and read (and cleared) by
//! `KVM_GET_DIRTY_LOG` on another thread. Each word is an atomic, so a bit
//! set while the log is being read lands either in this read or in the
//! next, never nowhere.
//!
//! Userspace sees the log as 2006 handed it out: `ALIGN(npages, 8) / 8`
//! bytes, the bit for page `i` of the slot in byte `i / 8`, bit `i % 8`.
//! On a little-endian machine that is exactly the memory of the words
//! here, so the bytes are the words' little-endian bytes, cut short.

use crate::kernel::{Errno, KResult};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

// ANCHOR: dirty_log
/// The dirty bits of one slot of `npages` pages.
pub struct DirtyLog {
    words: Vec<AtomicU64>,
    npages: usize,
}

impl DirtyLog {
    /// A log with no page dirty; `ENOMEM` if the bits cannot be allocated.
    pub fn new(npages: usize) -> KResult<DirtyLog> {
        let mut words = Vec::new();
        let count = npages.div_ceil(64);
        words.try_reserve_exact(count).map_err(|_| Errno::ENOMEM)?;
        words.resize_with(count, || AtomicU64::new(0));
        Ok(DirtyLog { words, npages })
    }

    /// The number of pages the log covers.
    pub fn npages(&self) -> usize {
        self.npages
    }

    /// Marks page `index` of the slot dirty; an index beyond the slot is
    /// ignored.
    pub fn mark(&self, index: usize) {
        if index < self.npages
            && let Some(word) = self.words.get(index / 64)
        {
            word.fetch_or(1 << (index % 64), Ordering::Relaxed);
        }
    }

    /// The size of the log as userspace receives it, in bytes: 2006's
    /// `ALIGN(memslot->npages, 8) / 8`.
    pub fn user_bytes(&self) -> usize {
        self.npages.div_ceil(8)
    }

    /// Takes the bits set so far, clearing them, as userspace's bytes.
    /// Each word is swapped with zero in one atomic step: a bit set
    /// meanwhile is either in the result or still in the log.
    pub fn take(&self) -> KResult<Vec<u8>> {
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(self.words.len() * 8).map_err(|_| Errno::ENOMEM)?;
        for word in &self.words {
            // Skip the store for a clean word, the common case.
            let bits = if word.load(Ordering::Relaxed) == 0 { 0 } else { word.swap(0, Ordering::Relaxed) };
            bytes.extend_from_slice(&bits.to_le_bytes());
        }
        bytes.truncate(self.user_bytes());
        Ok(bytes)
    }

    /// Sets again the bits of `bytes`, a result of `take` that could not
    /// be handed to userspace: they are reported next time instead.
    pub fn put_back(&self, bytes: &[u8]) {
        for (word, chunk) in self.words.iter().zip(bytes.chunks(8)) {
            let mut le = [0u8; 8];
            if let Some(d) = le.get_mut(..chunk.len()) {
                d.copy_from_slice(chunk);
            }
            word.fetch_or(u64::from_le_bytes(le), Ordering::Relaxed);
        }
    }
}
// ANCHOR_END: dirty_log

/// The pages whose bits are set in `bytes`, a log as userspace sees it.
pub fn dirty_pages(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b != 0)
        .flat_map(|(i, &b)| (0..8).filter(move |bit| b & (1 << bit) != 0).map(move |bit| i * 8 + bit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_log_is_clean_and_sized_as_2006_sized_it() {
        for (npages, bytes) in [(1, 1), (8, 1), (9, 2), (64, 8), (65, 9), (1000, 125)] {
            let log = DirtyLog::new(npages).expect("memory");
            assert_eq!(log.user_bytes(), bytes, "{npages} pages");
            assert_eq!(log.take().expect("memory"), vec![0; bytes]);
        }
    }

    #[test]
    fn page_i_is_bit_i_mod_8_of_byte_i_div_8() {
        let log = DirtyLog::new(100).expect("memory");
        for i in [0, 7, 8, 63, 64, 99] {
            log.mark(i);
        }
        let bytes = log.take().expect("memory");
        assert_eq!(bytes.len(), 13);
        assert_eq!((bytes[0], bytes[1], bytes[7], bytes[8], bytes[12]), (0x81, 0x01, 0x80, 0x01, 0x08));
        assert_eq!(dirty_pages(&bytes).collect::<Vec<_>>(), [0, 7, 8, 63, 64, 99]);
    }

    #[test]
    fn taking_clears_and_putting_back_restores() {
        let log = DirtyLog::new(20).expect("memory");
        log.mark(3);
        log.mark(100); // beyond the slot: ignored
        let first = log.take().expect("memory");
        assert_eq!(dirty_pages(&first).collect::<Vec<_>>(), [3]);
        assert!(dirty_pages(&log.take().expect("memory")).next().is_none(), "cleared");
        log.mark(19);
        log.put_back(&first);
        assert_eq!(dirty_pages(&log.take().expect("memory")).collect::<Vec<_>>(), [3, 19]);
    }

    #[test]
    fn marks_from_another_thread_are_never_lost() {
        let log = std::sync::Arc::new(DirtyLog::new(4096).expect("memory"));
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || (0..4096).for_each(|i| log.mark(i)))
        };
        let mut seen = vec![false; 4096];
        while !writer.is_finished() {
            dirty_pages(&log.take().expect("memory")).for_each(|i| seen[i] = true);
        }
        writer.join().expect("no panic");
        dirty_pages(&log.take().expect("memory")).for_each(|i| seen[i] = true);
        assert!(seen.iter().all(|&s| s), "every mark reached a take");
    }
}

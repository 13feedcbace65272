//! L1's initramfs: busybox, an init script, and whatever a job adds.
//!
//! Written as a `newc` cpio archive (the format the kernel unpacks into its
//! rootfs) with the `cpio` crate. Nothing is compressed: the L1 kernel then
//! needs no decompressor, and the archive is rebuilt for every boot in
//! milliseconds.

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// Debian's statically linked busybox, from `apt-get install busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    CharDev { major: u32, minor: u32 },
}

/// An initramfs being put together.
pub struct Initramfs {
    entries: Vec<(String, Entry)>,
}

impl Initramfs {
    /// busybox, the init script and the directories every job uses.
    pub fn base() -> Result<Self> {
        let mut fs = Initramfs::busybox(&["rkvm"])?;
        fs.add_file_from("init", &crate::paths::l1_sources().join("init.sh"), 0o755)?;
        Ok(fs)
    }

    /// busybox, the directories a small Linux mounts things on, and
    /// `extra_dirs`; no init yet.
    pub fn busybox(extra_dirs: &[&str]) -> Result<Self> {
        let mut fs = Initramfs { entries: Vec::new() };
        for dir in ["bin", "dev", "proc", "sys", "tmp"].iter().chain(extra_dirs) {
            fs.entries.push((dir.to_string(), Entry::Dir));
        }
        // The kernel opens /dev/console for init before anything mounts devtmpfs.
        fs.entries.push(("dev/console".into(), Entry::CharDev { major: 5, minor: 1 }));
        fs.add_file_from("bin/busybox", Path::new(BUSYBOX), 0o755)?;
        Ok(fs)
    }

    /// Adds a file with the given contents and permission bits.
    pub fn add_file(&mut self, dest: &str, data: Vec<u8>, mode: u32) {
        self.entries.push((dest.trim_start_matches('/').into(), Entry::File { data, mode }));
    }

    /// Adds a copy of the host file `src`.
    pub fn add_file_from(&mut self, dest: &str, src: &Path, mode: u32) -> Result<()> {
        let data = fs::read(src).with_context(|| format!("reading {} for the initramfs", src.display()))?;
        self.add_file(dest, data, mode);
        Ok(())
    }

    /// Writes the archive.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut out = std::io::BufWriter::new(fs::File::create(path)?);
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let builder = cpio::newc::Builder::new(name).ino(ino as u32 + 1).uid(0).gid(0);
            match entry {
                Entry::Dir => builder.mode(S_IFDIR | 0o755).nlink(2).write(&mut out, 0).finish()?,
                Entry::CharDev { major, minor } => builder
                    .mode(S_IFCHR | 0o600)
                    .rdev_major(*major)
                    .rdev_minor(*minor)
                    .write(&mut out, 0)
                    .finish()?,
                Entry::File { data, mode } => {
                    let mut w = builder.mode(S_IFREG | mode).nlink(1).write(&mut out, data.len() as u32);
                    w.write_all(data)?;
                    w.finish()?
                }
            };
        }
        cpio::newc::trailer(&mut out)?;
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_round_trips_through_a_cpio_reader() {
        let mut fs = Initramfs { entries: vec![("bin".into(), Entry::Dir)] };
        fs.add_file("/bin/hello", b"#!/bin/sh\necho hi\n".to_vec(), 0o755);
        let path = std::env::temp_dir().join(format!("rkvm-initramfs-test-{}.cpio", std::process::id()));
        fs.write(&path).unwrap();
        let data = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut reader = cpio::newc::Reader::new(&data[..]).unwrap();
        assert_eq!(reader.entry().name(), "bin");
        assert_eq!(reader.entry().mode() & S_IFDIR, S_IFDIR);
        let mut rest = reader.to_writer(std::io::sink()).unwrap();
        reader = cpio::newc::Reader::new(rest).unwrap();
        assert_eq!(reader.entry().name(), "bin/hello");
        assert_eq!(reader.entry().mode(), S_IFREG | 0o755);
        assert_eq!(reader.entry().file_size(), 18);
        rest = reader.to_writer(std::io::sink()).unwrap();
        assert!(cpio::newc::Reader::new(rest).unwrap().entry().is_trailer());
    }
}

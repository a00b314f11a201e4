//! Segment files: naming, scanning with resynchronisation, and crash recovery.
//!
//! A crash can leave the newest segment with a torn last frame, and a disk can flip
//! bits anywhere. A scan therefore never stops at the first bad byte: it skips the
//! damaged region, looks for the next frame whose header, CRC and sequence number
//! all check, and carries on, so every intact record is kept.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::format::{FrameHeader, FRAME_HEADER, MAX_PAYLOAD, SEGMENT_MAGIC};

/// Extension of segment files; the stem is the first sequence number, zero-padded.
pub const SEGMENT_EXT: &str = "seg";

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{SEGMENT_EXT}"))
}

/// Segment files of `dir` as `(first_seq, path)`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir)? {
        let path = item?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        if let Some(first) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

/// One intact frame found by a scan.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo {
    pub offset: usize,
    pub header: FrameHeader,
}

/// What a scan of one segment found.
#[derive(Debug, Default)]
pub struct SegmentScan {
    pub frames: Vec<FrameInfo>,
    /// Byte ranges that hold no intact frame: torn tails, corrupt frames, garbage.
    pub damaged: Vec<Range<usize>>,
    pub bad_magic: bool,
    pub len: usize,
}

impl SegmentScan {
    pub fn damaged_bytes(&self) -> usize {
        self.damaged.iter().map(|r| r.len()).sum()
    }

    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && !self.bad_magic
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.frames.last().map(|f| f.header.seq)
    }

    pub fn payload<'d>(&self, data: &'d [u8], frame: &FrameInfo) -> &'d [u8] {
        let start = frame.offset + FRAME_HEADER;
        &data[start..start + frame.header.len as usize]
    }
}

/// The frame at `at`, if its header is sane, its payload complete, its CRC right and
/// its sequence number above `after`.
fn frame_at(data: &[u8], at: usize, after: u64) -> Option<FrameHeader> {
    let head: &[u8; FRAME_HEADER] = data
        .get(at..at.checked_add(FRAME_HEADER)?)?
        .try_into()
        .ok()?;
    let header = FrameHeader::parse(head);
    let len = header.len as usize;
    // A sequence number far beyond the last one is garbage that happens to parse.
    if len > MAX_PAYLOAD || header.seq <= after || header.seq - after > 1 << 40 {
        return None;
    }
    let payload = data.get(at + FRAME_HEADER..(at + FRAME_HEADER).checked_add(len)?)?;
    header.checks(payload).then_some(header)
}

/// Scans a segment's bytes; `after` is the sequence number the first frame must exceed.
pub fn scan(data: &[u8], after: u64) -> SegmentScan {
    let mut scan = SegmentScan {
        len: data.len(),
        ..Default::default()
    };
    if data.len() < SEGMENT_MAGIC.len() || &data[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        scan.bad_magic = true;
    }
    let mut at = SEGMENT_MAGIC.len().min(data.len());
    let mut last = after;
    while at < data.len() {
        if let Some(header) = frame_at(data, at, last) {
            scan.frames.push(FrameInfo { offset: at, header });
            last = header.seq;
            at += FRAME_HEADER + header.len as usize;
            continue;
        }
        let start = at;
        let next =
            (start + 1..data.len()).find(|&candidate| frame_at(data, candidate, last).is_some());
        match next {
            Some(next) => {
                scan.damaged.push(start..next);
                at = next;
            }
            None => {
                scan.damaged.push(start..data.len());
                break;
            }
        }
    }
    scan
}

/// Rewrites a damaged segment with only its intact frames (tmp file, fsync, rename).
pub fn rewrite(path: &Path, data: &[u8], scan: &SegmentScan) -> io::Result<()> {
    let tmp = path.with_extension("seg.tmp");
    {
        let mut file = File::create(&tmp)?;
        let mut out = Vec::with_capacity(data.len());
        out.extend_from_slice(SEGMENT_MAGIC);
        for frame in &scan.frames {
            out.extend_from_slice(
                &data[frame.offset..frame.offset + FRAME_HEADER + frame.header.len as usize],
            );
        }
        file.write_all(&out)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes a created, renamed or deleted file's directory entry durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `contents` to `path` atomically: a crash leaves the old or the new file, never half.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::super::format::EncodedEntry;
    use super::*;

    fn segment(entries: &[(u64, &str)]) -> Vec<u8> {
        let mut data = SEGMENT_MAGIC.to_vec();
        for (seq, value) in entries {
            let mut entry = EncodedEntry::from_records(
                || [("t", Some(&b"k"[..]), value.as_bytes())].into_iter(),
                &[("db", "x")],
            )
            .unwrap();
            entry.seal(*seq, 7);
            data.extend_from_slice(&entry.bytes);
        }
        data
    }

    #[test]
    fn clean_segment_scans_every_frame() {
        let data = segment(&[(1, "a"), (2, "bb"), (3, "ccc")]);
        let scan = scan(&data, 0);
        assert!(scan.is_clean());
        assert_eq!(
            scan.frames.iter().map(|f| f.header.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn torn_tail_is_skipped_and_reported() {
        let data = segment(&[(1, "a"), (2, "bb"), (3, "ccc")]);
        let torn = &data[..data.len() - 5];
        let scan = scan(torn, 0);
        assert_eq!(scan.frames.len(), 2);
        assert_eq!(scan.damaged.len(), 1);
        assert_eq!(scan.damaged[0].end, torn.len());
    }

    #[test]
    fn corrupt_frame_in_the_middle_keeps_the_frames_after_it() {
        let mut data = segment(&[(1, "aaaa"), (2, "bbbb"), (3, "cccc")]);
        let second = scan(&data, 0).frames[1].offset;
        data[second + FRAME_HEADER + 3] ^= 0xff;
        let scan = scan(&data, 0);
        assert_eq!(
            scan.frames.iter().map(|f| f.header.seq).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(scan.damaged.len(), 1);
    }

    #[test]
    fn garbage_appended_after_a_torn_frame_is_skipped() {
        let mut data = segment(&[(1, "a"), (2, "b")]);
        data.truncate(data.len() - 3);
        data.extend_from_slice(&[0xAB; 100]);
        let scan = scan(&data, 0);
        assert_eq!(scan.frames.len(), 1);
        assert_eq!(
            scan.damaged_bytes(),
            data.len() - scan.frames[0].offset - FRAME_HEADER - scan.frames[0].header.len as usize
        );
    }

    #[test]
    fn rewrite_keeps_only_intact_frames() {
        let dir =
            std::env::temp_dir().join(format!("influx-tee-seg-{}-{}", std::process::id(), line!()));
        fs::create_dir_all(&dir).unwrap();
        let path = segment_path(&dir, 1);
        let mut data = segment(&[(1, "a"), (2, "b"), (3, "c")]);
        data.truncate(data.len() - 2);
        let found = scan(&data, 0);
        rewrite(&path, &data, &found).unwrap();
        let again = fs::read(&path).unwrap();
        let rescan = scan(&again, 0);
        assert!(rescan.is_clean());
        assert_eq!(rescan.frames.len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}

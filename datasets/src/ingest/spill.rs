//! Scratch files of the ingest. Candidate rows and quarantined rows are written once, in a
//! compact length-prefixed encoding, as the input streams by; the global steps (averaging,
//! de-duplication, the sort by id) work on small keys and read the texts back by offset when
//! the outputs are written. The files sit in the output directory and are removed when the
//! handle is dropped, whether the ingest succeeds or fails.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::adapters::{Reason, Turn};
use crate::error::{DatasetError, Result};

/// Removes the scratch file when dropped.
struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A scratch file being written.
pub(super) struct SpillWriter {
    guard: Guard,
    out: BufWriter<File>,
    len: u64,
}

impl SpillWriter {
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        let file = File::create(&path).map_err(|e| DatasetError::io(&path, e))?;
        Ok(Self {
            guard: Guard(path),
            out: BufWriter::with_capacity(1 << 20, file),
            len: 0,
        })
    }

    /// Appends `bytes`; returns their offset.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let at = self.len;
        self.out
            .write_all(bytes)
            .map_err(|e| DatasetError::io(&self.guard.0, e))?;
        self.len += bytes.len() as u64;
        Ok(at)
    }

    /// Flushes the file and reopens it for reading.
    pub fn finish(self) -> Result<Spill> {
        let Self { guard, out, .. } = self;
        out.into_inner()
            .map_err(|e| DatasetError::io(&guard.0, e.into_error()))?;
        let file = File::open(&guard.0).map_err(|e| DatasetError::io(&guard.0, e))?;
        Ok(Spill { guard, file })
    }
}

/// A finished scratch file, read by offset or from the start.
pub(super) struct Spill {
    guard: Guard,
    file: File,
}

impl Spill {
    /// Reads `len` bytes at `offset` into `buf` (replacing its content).
    pub fn read_at(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        buf.resize(len, 0);
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| DatasetError::io(&self.guard.0, e))
    }

    /// The whole file from the start (once).
    pub fn reader(&self) -> std::io::BufReader<&File> {
        std::io::BufReader::with_capacity(1 << 20, &self.file)
    }

    pub fn path(&self) -> &Path {
        &self.guard.0
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// The encoded texts of a candidate: prompt, chosen, rejected and the prompt's turns.
/// Appends them to `buf`.
pub(super) fn encode_pair(
    buf: &mut Vec<u8>,
    prompt: &str,
    chosen: &str,
    rejected: &str,
    turns: Option<&[(&str, &str)]>,
) {
    for s in [prompt, chosen, rejected] {
        put_str(buf, s);
    }
    match turns {
        None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(turns) => {
            buf.extend_from_slice(&(turns.len() as u32).to_le_bytes());
            for (role, text) in turns {
                put_str(buf, role);
                put_str(buf, text);
            }
        }
    }
}

/// A candidate's texts as read back from a spill.
pub(super) struct PairTexts<'a> {
    pub prompt: &'a str,
    pub chosen: &'a str,
    pub rejected: &'a str,
    pub turns: Option<Vec<(&'a str, &'a str)>>,
}

/// Reads what [`encode_pair`] wrote.
pub(super) fn decode_pair(bytes: &[u8]) -> Option<PairTexts<'_>> {
    let mut d = Decoder(bytes);
    let (prompt, chosen, rejected) = (d.str()?, d.str()?, d.str()?);
    let n = d.u32()?;
    let turns = match n {
        u32::MAX => None,
        n => Some(
            (0..n)
                .map(|_| Some((d.str()?, d.str()?)))
                .collect::<Option<Vec<_>>>()?,
        ),
    };
    Some(PairTexts {
        prompt,
        chosen,
        rejected,
        turns,
    })
}

/// Appends a quarantined row of the streaming pass to `buf`: its place, reason, detail and raw
/// text, after the row's length.
pub(super) fn encode_dropped(
    buf: &mut Vec<u8>,
    file: usize,
    line: usize,
    reason: Reason,
    detail: &str,
    raw: &str,
) {
    let len = 4 + 8 + 1 + 4 + detail.len() + 4 + raw.len();
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&(file as u32).to_le_bytes());
    buf.extend_from_slice(&(line as u64).to_le_bytes());
    buf.push(Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0) as u8);
    put_str(buf, detail);
    put_str(buf, raw);
}

/// A quarantined row as read back from a spill.
pub(super) struct DroppedRow {
    pub file: usize,
    pub line: usize,
    pub reason: Reason,
    pub detail: String,
    pub raw: String,
}

/// Reads the next row [`encode_dropped`] wrote, or `None` at the end of the stream.
pub(super) fn read_dropped(
    r: &mut impl std::io::Read,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<DroppedRow>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    buf.resize(u32::from_le_bytes(len) as usize, 0);
    r.read_exact(buf)?;
    let corrupt = || std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt scratch row");
    let mut d = Decoder(buf);
    let (file, line) = (d.u32().ok_or_else(corrupt)?, d.u64().ok_or_else(corrupt)?);
    let reason = *d
        .u8()
        .and_then(|i| Reason::ALL.get(i as usize))
        .ok_or_else(corrupt)?;
    let (detail, raw) = (d.str().ok_or_else(corrupt)?, d.str().ok_or_else(corrupt)?);
    Ok(Some(DroppedRow {
        file: file as usize,
        line: line as usize,
        reason,
        detail: detail.to_string(),
        raw: raw.to_string(),
    }))
}

struct Decoder<'a>(&'a [u8]);

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// `turns` of a decoded pair as owned [`Turn`]s.
pub(super) fn owned_turns(turns: &[(&str, &str)]) -> Vec<Turn> {
    turns
        .iter()
        .map(|(role, text)| Turn {
            role: role.to_string(),
            text: text.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_dropped_rows_round_trip() {
        let mut bytes = Vec::new();
        encode_pair(&mut bytes, "p ’", "", "r", None);
        let t = decode_pair(&bytes).unwrap();
        assert_eq!((t.prompt, t.chosen, t.rejected), ("p ’", "", "r"));
        assert!(t.turns.is_none());
        let mut bytes = Vec::new();
        encode_pair(&mut bytes, "p", "c", "r", Some(&[("human", "hi")]));
        assert_eq!(
            decode_pair(&bytes).unwrap().turns,
            Some(vec![("human", "hi")])
        );
        let mut stream = Vec::new();
        encode_dropped(&mut stream, 3, 17, Reason::Tie, "d", "{raw}");
        encode_dropped(&mut stream, 0, 1, Reason::Duplicate, "", "");
        let (mut r, mut buf) = (&stream[..], Vec::new());
        let a = read_dropped(&mut r, &mut buf).unwrap().unwrap();
        assert_eq!((a.file, a.line, a.reason), (3, 17, Reason::Tie));
        assert_eq!((a.detail.as_str(), a.raw.as_str()), ("d", "{raw}"));
        let b = read_dropped(&mut r, &mut buf).unwrap().unwrap();
        assert_eq!((b.file, b.line, b.reason), (0, 1, Reason::Duplicate));
        assert!(read_dropped(&mut r, &mut buf).unwrap().is_none());
    }
}

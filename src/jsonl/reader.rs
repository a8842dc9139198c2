//! Reading a JSON Lines file for an import on a thread of its own: big reads,
//! lines found with `memchr` and read into events (`decode::line`) straight
//! from the read buffer, `chunk` lines at a time. At most `AHEAD` chunks wait
//! for the caller (memory stays bounded however long the file), who writes one
//! while the next is read on the other core.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::Duration;

use super::decode::{self, ReadLines};
use crate::errors::{CoreError, CoreResult, Kind};

/// Bytes asked of each read.
const READ: usize = 1 << 20;
/// Chunks read ahead of the one being written.
const AHEAD: usize = 2;

/// Lines read: their events and bad lines, how many bytes of the file they took, and whether
/// they are the last the reader gives.
pub struct Chunk {
    pub read: ReadLines,
    pub bytes: usize,
    pub last: bool,
}

/// What waiting for the next chunk gave.
pub enum Next {
    Ready(Option<CoreResult<Chunk>>),
    /// Nothing yet (a pipe with nothing to read, say).
    NotYet,
}

/// The chunks of a file, read on a thread that stops at the end of the file, at the first bad
/// line (without `skip_bad`), or once this is dropped.
pub struct ChunkReader {
    chunks: Receiver<CoreResult<Chunk>>,
}

impl ChunkReader {
    /// Reads `file` from where it stands, `chunk` lines (blank ones counted) at a time, the
    /// first numbered `first_line`.
    pub fn start(file: File, chunk: usize, skip_bad: bool, first_line: usize) -> CoreResult<ChunkReader> {
        let (sender, chunks) = sync_channel(AHEAD);
        let mut lines = Lines { file, buf: vec![0; READ], start: 0, end: 0, eof: false, number: first_line };
        let chunk = chunk.max(1);
        thread::Builder::new()
            .name("jsonl-read".into())
            .spawn(move || lines.send_all(chunk, skip_bad, &sender))
            .map_err(|e| CoreError::new(Kind::Store, format!("cannot start the reading thread: {e}")))?;
        Ok(ChunkReader { chunks })
    }

    /// The next chunk, waiting for it at most `wait`: `Ready(None)` once the last was given.
    pub fn next(&self, wait: Duration) -> Next {
        match self.chunks.recv_timeout(wait) {
            Ok(chunk) => Next::Ready(Some(chunk)),
            Err(RecvTimeoutError::Timeout) => Next::NotYet,
            Err(RecvTimeoutError::Disconnected) => Next::Ready(None),
        }
    }
}

/// The file, and what of it is read but not yet looked at.
struct Lines {
    file: File,
    buf: Vec<u8>,
    /// `buf[start..end]` is read and not yet taken.
    start: usize,
    end: usize,
    eof: bool,
    /// The number of the line at `start`.
    number: usize,
}

impl Lines {
    fn send_all(&mut self, chunk: usize, skip_bad: bool, sender: &SyncSender<CoreResult<Chunk>>) {
        loop {
            let next = self.chunk(chunk, skip_bad);
            let last = next.as_ref().map_or(true, |c| c.last);
            // A send fails once the caller has stopped taking chunks.
            if sender.send(next).is_err() || last {
                return;
            }
        }
    }

    /// Up to `chunk` lines; a last line with no `\n` (a file cut short) is a line too.
    fn chunk(&mut self, chunk: usize, skip_bad: bool) -> CoreResult<Chunk> {
        let mut read = ReadLines { events: Vec::with_capacity(chunk), bad: Vec::new() };
        let mut bytes = 0;
        let mut stopped = false;
        for _ in 0..chunk {
            let Some(len) = self.next_line()? else { break };
            let taken = &self.buf[self.start..self.start + len];
            let raw = taken.strip_suffix(b"\n").unwrap_or(taken);
            let good = decode::line(raw, self.number, &mut read);
            self.start += len;
            self.number += 1;
            bytes += len;
            if !good && !skip_bad {
                stopped = true;
                break;
            }
        }
        // Whether anything follows, so that the caller knows this chunk for the last.
        if self.start == self.end && !self.eof {
            self.fill()?;
        }
        Ok(Chunk { read, bytes, last: stopped || (self.eof && self.start == self.end) })
    }

    /// The length of the next line with its `\n`, read into `buf[start..]`; `None` at the end.
    fn next_line(&mut self) -> CoreResult<Option<usize>> {
        let mut searched = 0;
        loop {
            let pending = &self.buf[self.start + searched..self.end];
            if let Some(i) = memchr::memchr(b'\n', pending) {
                return Ok(Some(searched + i + 1));
            }
            searched = self.end - self.start;
            if self.eof {
                return Ok((searched > 0).then_some(searched));
            }
            self.fill()?;
        }
    }

    /// Reads more after `end`, moving what is not yet taken to the front first (and growing
    /// the buffer for a line longer than it).
    fn fill(&mut self) -> CoreResult<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(CoreError::new(
                        Kind::InvalidArgument,
                        format!("cannot read line {} of the file to import: {e}", self.number),
                    ))
                }
            }
        }
    }
}

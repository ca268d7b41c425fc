//! An incremental decoder of server-sent events (the WHATWG `text/event-stream` format): bytes
//! in, as the network delivers them, whole events out.
//!
//! Owns line splitting (`\n`, `\r\n` or a lone `\r`, even when a `\r\n` pair straddles two
//! chunks), the field grammar (`event:`, `data:`, comments, a single leading space stripped from
//! a value) and dispatch on a blank line. `id:` and `retry:` only matter to a browser's
//! reconnection and are read past.
//!
//! Invariants:
//! - Pure and chunking-blind. Any split of the same bytes yields the same events: lines are
//!   decoded as UTF-8 only once complete, and `\r` / `\n` never occur inside a UTF-8 sequence,
//!   so a character cut between two chunks is reassembled before it is decoded.
//! - Bounded. A line longer than [`MAX_LINE_BYTES`], or an event whose `data:` lines add up to
//!   more than [`MAX_EVENT_BYTES`], is an [`SseError`] as soon as the bytes arrive (split or
//!   not): a server that never ends a line or never sends the blank line cannot grow memory
//!   until the wall-time limit.

/// The longest line kept: far above any real event (a chunk of a reply is a few hundred
/// bytes), far below what would hurt a machine running many agents.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// The most `data:` an event may accumulate before its blank line.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// A stream the decoder refuses to buffer further. The stream must end: the decoder has
/// dropped what it held, so decoding on would start in the middle of an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("a line of the event stream is longer than {} (the server never ended it)", mib(.limit))]
    LineTooLong { limit: usize },
    #[error(
        "an event of the stream has more than {} of data (the server never ended it with a blank line)",
        mib(.limit)
    )]
    EventTooLarge { limit: usize },
}

/// `4 MiB`, or the exact bytes for a limit that is no whole number of MiB (tests).
fn mib(bytes: &usize) -> String {
    const MIB: usize = 1024 * 1024;
    let bytes = *bytes;
    if bytes >= MIB && bytes % MIB == 0 { format!("{} MiB", bytes / MIB) } else { format!("{bytes} bytes") }
}

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the server sent a non-empty one (the spec's default is
    /// `message`; `None` lets a dialect tell "unnamed" apart).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The decoder's state between chunks.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the line being read, not yet terminated.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` opening this one belongs to that line break.
    after_cr: bool,
    /// No line has been completed yet: a byte order mark may open it.
    first_line: bool,
    /// The event being built.
    event: String,
    data: String,
    max_line: usize,
    max_event: usize,
}

impl SseDecoder {
    /// A decoder with the limits [`MAX_LINE_BYTES`] and [`MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        SseDecoder::with_limits(MAX_LINE_BYTES, MAX_EVENT_BYTES)
    }

    /// A decoder refusing lines longer than `max_line` bytes and events with more than
    /// `max_event` bytes of data.
    pub fn with_limits(max_line: usize, max_event: usize) -> Self {
        SseDecoder { first_line: true, max_line, max_event, ..SseDecoder::default() }
    }

    /// Feeds the next bytes of the stream; returns the events they complete, in order, or the
    /// limit they broke (the events completed before it are dropped with the stream).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let result = self.push_bounded(bytes);
        if result.is_err() {
            // What was held is given back at once, not when the stream's owner gets to it.
            self.finish();
            self.line = Vec::new();
            self.data = String::new();
        }
        result
    }

    fn push_bounded(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n' || byte == b'\r') {
            self.extend_line(&rest[..end])?;
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    // The chunk ends between `\r` and a possible `\n`: decide with the next one.
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.line_done(&line)? {
                events.push(event);
            }
        }
        self.extend_line(rest)?;
        Ok(events)
    }

    /// Appends to the line being read, refusing to pass the line limit.
    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len().saturating_add(bytes.len()) > self.max_line {
            return Err(SseError::LineTooLong { limit: self.max_line });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// The stream ended. Per the spec an event not closed by a blank line is incomplete and is
    /// dropped; this returns whether such a partial event (or line) was left, for diagnostics.
    pub fn finish(&mut self) -> bool {
        let partial = !self.line.is_empty() || !self.data.is_empty() || !self.event.is_empty();
        self.line.clear();
        self.data.clear();
        self.event.clear();
        self.after_cr = false;
        partial
    }

    /// Interprets one complete line; returns the event a blank line dispatches.
    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        let decoded = String::from_utf8_lossy(line);
        let mut line: &str = &decoded;
        if self.first_line {
            self.first_line = false;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.starts_with(':') {
            return Ok(None); // a comment: servers send them as keep-alives
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                // The `\n` each line appends counts: a flood of empty `data:` lines is bounded too.
                if self.data.len().saturating_add(value.len()).saturating_add(1) > self.max_event {
                    return Err(SseError::EventTooLarge { limit: self.max_event });
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            // `id`, `retry` and unknown fields are ignored, as the spec says.
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            // No `data:` line: nothing is dispatched, and the event name is reset.
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` the last `data:` line appended
        Some(SseEvent { event: (!event.is_empty()).then_some(event), data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn event(name: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: name.map(str::to_owned), data: data.to_owned() }
    }

    fn decode_all(bytes: &[u8]) -> Vec<SseEvent> {
        SseDecoder::new().push(bytes).unwrap()
    }

    /// The same bytes split at every possible point (and fed byte by byte) decode alike.
    fn assert_chunking_blind(bytes: &[u8], expected: &[SseEvent]) {
        assert_eq!(decode_all(bytes), expected, "in one piece");
        for split in 0..=bytes.len() {
            let mut decoder = SseDecoder::new();
            let mut events = decoder.push(&bytes[..split]).unwrap();
            events.extend(decoder.push(&bytes[split..]).unwrap());
            assert_eq!(events, expected, "split at {split}");
        }
        let mut decoder = SseDecoder::new();
        let events: Vec<SseEvent> = bytes.iter().flat_map(|byte| decoder.push(&[*byte]).unwrap()).collect();
        assert_eq!(events, expected, "byte by byte");
    }

    #[test]
    fn data_lines_join_with_newlines_and_a_blank_line_dispatches() {
        assert_chunking_blind(
            b"data: first\ndata: second\n\ndata:third\n\n",
            &[event(None, "first\nsecond"), event(None, "third")],
        );
    }

    #[test]
    fn every_line_ending_works_and_crlf_may_straddle_chunks() {
        let expected = [event(Some("a"), "1"), event(None, "2"), event(None, "3")];
        assert_chunking_blind(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\rdata: 3\n\n", &expected);
        // `\r` then `\n` in the next chunk is one line break, not a blank line between.
        let mut decoder = SseDecoder::new();
        assert_eq!(decoder.push(b"data: x\r"), Ok(vec![]));
        assert_eq!(decoder.push(b"\ndata: y\r"), Ok(vec![]));
        assert_eq!(decoder.push(b"\n\r"), Ok(vec![event(None, "x\ny")]));
    }

    #[test]
    fn event_names_comments_and_other_fields() {
        assert_chunking_blind(
            b": keep-alive\nevent: message_start\nid: 7\nretry: 100\ndata: {\"a\":1}\n\n: ping\n\ndata: next\n\n",
            &[event(Some("message_start"), "{\"a\":1}"), event(None, "next")],
        );
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        assert_eq!(decode_all(b"data:  two spaces\ndata:none\n\n"), vec![event(None, " two spaces\nnone")]);
    }

    #[test]
    fn a_field_without_colon_has_an_empty_value() {
        // `data` alone appends an empty line; the event still dispatches, with empty data.
        assert_eq!(decode_all(b"data\n\n"), vec![event(None, "")]);
        assert_eq!(decode_all(b"data\ndata\n\n"), vec![event(None, "\n")]);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_its_name_resets() {
        assert_eq!(decode_all(b"event: lonely\n\ndata: x\n\n"), vec![event(None, "x")]);
    }

    #[test]
    fn utf8_split_inside_a_character_is_reassembled() {
        let bytes = "data: héllo → 世界 🎉\n\n".as_bytes();
        assert_chunking_blind(bytes, &[event(None, "héllo → 世界 🎉")]);
    }

    #[test]
    fn a_byte_order_mark_opening_the_stream_is_dropped() {
        assert_chunking_blind(b"\xEF\xBB\xBFdata: x\n\n", &[event(None, "x")]);
        // Only at the start: later it makes the field name unknown, so the line is ignored.
        assert_eq!(decode_all(b"data: x\n\n\xEF\xBB\xBFdata: y\n\n"), vec![event(None, "x")]);
    }

    #[test]
    fn an_unterminated_event_at_the_end_is_dropped() {
        let mut decoder = SseDecoder::new();
        assert_eq!(decoder.push(b"data: whole\n\ndata: [DONE]\n"), Ok(vec![event(None, "whole")]));
        assert!(decoder.finish(), "a partial event was left");
        assert!(!SseDecoder::new().finish());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(decode_all(b"data: a\xFFb\n\n"), vec![event(None, "a\u{fffd}b")]);
    }

    /// Feeds `bytes` in pieces of `piece` bytes; the events until the first error, and it.
    fn feed(decoder: &mut SseDecoder, bytes: &[u8], piece: usize) -> (Vec<SseEvent>, Option<SseError>) {
        let mut events = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            match decoder.push(chunk) {
                Ok(more) => events.extend(more),
                Err(err) => return (events, Some(err)),
            }
        }
        (events, None)
    }

    #[test]
    fn a_line_over_the_limit_is_an_error_however_it_is_split() {
        // `data: ` and ten bytes: 16 bytes, one over a 15-byte limit.
        let stream = b"data: 1\n\ndata: 0123456789\n\n";
        for piece in [1, 3, 7, stream.len()] {
            let mut decoder = SseDecoder::with_limits(15, 1024);
            let (_, err) = feed(&mut decoder, stream, piece);
            assert_eq!(err, Some(SseError::LineTooLong { limit: 15 }), "piece {piece}");
        }
        // At the limit exactly, the line is fine.
        let mut decoder = SseDecoder::with_limits(16, 1024);
        assert_eq!(feed(&mut decoder, stream, 5), (vec![event(None, "1"), event(None, "0123456789")], None));
    }

    #[test]
    fn an_endless_line_fails_once_past_the_limit_and_holds_no_more() {
        let mut decoder = SseDecoder::new();
        let piece = vec![b'x'; 64 * 1024];
        let mut fed = 0;
        let err = loop {
            match decoder.push(&piece) {
                Ok(events) => assert!(events.is_empty()),
                Err(err) => break err,
            }
            fed += piece.len();
            assert!(fed <= MAX_LINE_BYTES, "read {fed} bytes of one line without complaint");
        };
        assert_eq!(err, SseError::LineTooLong { limit: MAX_LINE_BYTES });
        assert_eq!(err.to_string(), "a line of the event stream is longer than 4 MiB (the server never ended it)");
        assert_eq!(decoder.line.capacity(), 0, "the buffer is given back");
    }

    #[test]
    fn data_lines_without_a_blank_line_fail_past_the_event_limit() {
        // Each `data: abcd` line adds five bytes (with its `\n`): the third passes 12.
        let stream = b"data: abcd\ndata: abcd\ndata: abcd\n\n";
        for piece in [1, 4, stream.len()] {
            let mut decoder = SseDecoder::with_limits(1024, 12);
            let (events, err) = feed(&mut decoder, stream, piece);
            assert_eq!(events, vec![], "piece {piece}");
            assert_eq!(err, Some(SseError::EventTooLarge { limit: 12 }), "piece {piece}");
        }
        // The limit is per event: a blank line starts the count again.
        let mut decoder = SseDecoder::with_limits(1024, 12);
        let stream = b"data: abcd\ndata: abcd\n\ndata: abcd\ndata: abcd\n\n";
        assert_eq!(feed(&mut decoder, stream, 3), (vec![event(None, "abcd\nabcd"), event(None, "abcd\nabcd")], None));
        // Empty `data` lines count their line break, so a flood of them is bounded too.
        let mut decoder = SseDecoder::with_limits(1024, 12);
        let (_, err) = feed(&mut decoder, &b"data\n".repeat(13), 5);
        assert_eq!(err, Some(SseError::EventTooLarge { limit: 12 }));
        assert_eq!(
            SseError::EventTooLarge { limit: MAX_EVENT_BYTES }.to_string(),
            "an event of the stream has more than 4 MiB of data (the server never ended it with a blank line)"
        );
    }
}

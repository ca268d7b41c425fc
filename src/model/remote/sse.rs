//! An incremental decoder of server-sent events (the WHATWG `text/event-stream` format): bytes
//! in, as the network delivers them, whole events out.
//!
//! Owns line splitting (`\n`, `\r\n` or a lone `\r`, even when a `\r\n` pair straddles two
//! chunks), the field grammar (`event:`, `data:`, comments, a single leading space stripped from
//! a value) and dispatch on a blank line. `id:` and `retry:` only matter to a browser's
//! reconnection and are read past.
//!
//! Invariant: pure and chunking-blind. Any split of the same bytes yields the same events:
//! lines are decoded as UTF-8 only once complete, and `\r` / `\n` never occur inside a UTF-8
//! sequence, so a character cut between two chunks is reassembled before it is decoded.

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
}

impl SseDecoder {
    pub fn new() -> Self {
        SseDecoder { first_line: true, ..SseDecoder::default() }
    }

    /// Feeds the next bytes of the stream; returns the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n' || byte == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
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
            if let Some(event) = self.line_done(&line) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        events
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
    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        let decoded = String::from_utf8_lossy(line);
        let mut line: &str = &decoded;
        if self.first_line {
            self.first_line = false;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None; // a comment: servers send them as keep-alives
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // `id`, `retry` and unknown fields are ignored, as the spec says.
            _ => {}
        }
        None
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
        SseDecoder::new().push(bytes)
    }

    /// The same bytes split at every possible point (and fed byte by byte) decode alike.
    fn assert_chunking_blind(bytes: &[u8], expected: &[SseEvent]) {
        assert_eq!(decode_all(bytes), expected, "in one piece");
        for split in 0..=bytes.len() {
            let mut decoder = SseDecoder::new();
            let mut events = decoder.push(&bytes[..split]);
            events.extend(decoder.push(&bytes[split..]));
            assert_eq!(events, expected, "split at {split}");
        }
        let mut decoder = SseDecoder::new();
        let events: Vec<SseEvent> = bytes.iter().flat_map(|byte| decoder.push(&[*byte])).collect();
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
        assert_eq!(decoder.push(b"data: x\r"), vec![]);
        assert_eq!(decoder.push(b"\ndata: y\r"), vec![]);
        assert_eq!(decoder.push(b"\n\r"), vec![event(None, "x\ny")]);
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
        assert_eq!(decoder.push(b"data: whole\n\ndata: [DONE]\n"), vec![event(None, "whole")]);
        assert!(decoder.finish(), "a partial event was left");
        assert!(!SseDecoder::new().finish());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(decode_all(b"data: a\xFFb\n\n"), vec![event(None, "a\u{fffd}b")]);
    }
}

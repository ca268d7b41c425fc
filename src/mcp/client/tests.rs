//! Tests of `mcp::client`.

use super::*;
use rmcp::model::NumberOrString;

#[test]
fn progress_reads_as_the_message_and_the_numbers() {
    let token = ProgressToken(NumberOrString::Number(1));
    let mut params = ProgressNotificationParam::new(token, 2.0);
    assert_eq!(progress_line(&params), "progress 2");
    params.total = Some(5.0);
    params.message = Some("step 2 of 5".into());
    assert_eq!(progress_line(&params), "step 2 of 5 (2/5)");
}

#[test]
fn progress_that_comes_before_its_route_is_passed_on_and_a_finished_call_hears_no_more() {
    let routes = ProgressRoutes::default();
    let token = ProgressToken(NumberOrString::Number(7));
    routes.deliver(&token, "step 1 of 3 (1/3)".into());
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let guard = routes.route(token.clone(), Arc::new(move |line| lock(&sink).push(line)));
    routes.deliver(&token, "step 2 of 3 (2/3)".into());
    drop(guard);
    routes.deliver(&token, "late".into());
    assert_eq!(*lock(&heard), ["step 1 of 3 (1/3)", "step 2 of 3 (2/3)"]);
    for n in 0..200 {
        routes.deliver(&ProgressToken(NumberOrString::Number(1000 + n)), "nobody asked".into());
    }
    assert!(routes.lock().early.len() <= EARLY_PROGRESS, "unasked-for progress is bounded");
}

#[test]
fn stderr_lines_are_cut_at_the_limit_and_say_how_much_was_cut() {
    // (stream, limit, lines): every split of the stream gives the same lines.
    let table: &[(&[u8], usize, &[&str])] = &[
        (b"one\ntwo\n", 8, &["one", "two"]),
        (b"crlf\r\nend", 8, &["crlf", "end"]),
        (b"0123456789\nok\n", 8, &["01234567… [cut 2 bytes]", "ok"]),
        (b"exactly8\n", 8, &["exactly8"]),
        // A cut through a character drops it whole: `é` is two bytes, its first is 8th.
        ("1234567é tail\n".as_bytes(), 8, &["1234567… [cut 7 bytes]"]),
        (b"\n\n", 8, &["", ""]),
        (b"no line break at the end", 4, &["no l… [cut 20 bytes]"]),
    ];
    for (stream, limit, expected) in table {
        for piece in [1, 3, stream.len()] {
            let mut lines = StderrLines::new(*limit);
            let mut got: Vec<String> = stream.chunks(piece).flat_map(|chunk| lines.push(chunk)).collect();
            got.extend(lines.finish());
            assert_eq!(got, *expected, "{} in pieces of {piece}", String::from_utf8_lossy(stream));
        }
    }
    // A line that never ends holds no more than the limit.
    let mut lines = StderrLines::new(STDERR_LINE_BYTES);
    for _ in 0..256 {
        assert!(lines.push(&[b'y'; 8192]).is_empty());
    }
    assert_eq!(lines.line.len(), STDERR_LINE_BYTES);
    assert_eq!(
        lines.finish().unwrap(),
        format!("{}… [cut {} bytes]", "y".repeat(STDERR_LINE_BYTES), 256 * 8192 - STDERR_LINE_BYTES)
    );
}

#[test]
fn a_runs_copy_of_stderr_stops_at_its_budget_with_one_line_saying_so() {
    let redactor = Redactor::new(vec!["tok-secret-1".into()]);
    let mut sink = StderrSink::new(Path::new("/run"), &redactor, 2048);
    assert_eq!(sink.admit("using tok-secret-1").as_deref(), Some("using [redacted]\n"));
    let line = "x".repeat(1500);
    assert_eq!(sink.admit(&line).map(|t| t.len()), Some(1501));
    let notice = sink.admit(&line).unwrap();
    assert_eq!(notice, "[troupe: this server wrote more than 2 KiB of stderr during the run; the rest is dropped]\n");
    assert_eq!(sink.admit("later"), None, "nothing after the notice");
    assert_eq!(sink.admit(""), None);
}

#[test]
fn a_bare_command_is_found_in_path_and_a_path_is_kept() {
    assert!(find_program("sh").is_some_and(|p| p.is_absolute()));
    assert_eq!(find_program("./srv.py"), Some(PathBuf::from("./srv.py")));
    assert_eq!(find_program("no-such-program-troupe"), None);
}

//! Signals: SIGINT and SIGTERM stop at a boundary, keep what resumes and release the locks (case 7).
use super::*;

/// Starts `ember ARGS` in `dir`, waits for `marker` to grow (a step logged: training under way),
/// sends `signal`, and returns the finished process's output. Growth, not mere existence: the
/// metrics file is created empty before the first step, and a signal there has nothing to keep.
fn signal_when(dir: &Path, args: &[impl AsRef<str>], marker: &Path, signal: i32) -> Output {
    let child = Command::new(EMBER)
        .args(args.iter().map(AsRef::as_ref))
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ember starts");
    let size = || fs::metadata(marker).map_or(0, |m| m.len());
    let before = size();
    let clock = std::time::Instant::now();
    while size() <= before && clock.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait_with_output().unwrap()
}

#[test]
fn sigint_and_sigterm_killed_the_process_without_a_word_and_left_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sft = |out: &'static str| {
        [
            "sft",
            "--data",
            &fx("01-data"),
            "--tokenizer",
            &fx("02-tokenizer"),
            "--steps",
            "150",
            "--batch",
            "8",
            "--out",
            out,
        ]
        .map(String::from)
    };
    let a = sft("pol");
    let metrics = d.join("pol.partial/metrics.jsonl");
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let o = signal_when(d, &a, &metrics, signal);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(code), "{t}");
        assert!(
            t.contains("interrupted; run the same command to resume"),
            "{t}"
        );
        assert!(t.contains("the checkpoint of step"), "{t}");
        assert!(!t.contains("panicked"), "{t}");
        assert!(!d.join("pol.lock").exists() && !d.join("pol").exists());
        assert!(d.join("pol.partial/checkpoint/state.json").exists());
    }
    let o = Command::new(EMBER)
        .args(&a)
        .current_dir(d)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("resuming from checkpoint"),
        "{}",
        text(&o)
    );
    let whole = sft("whole");
    let o = ember_in(d, &whole);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read(d.join("pol/model.safetensors")).unwrap(),
        fs::read(d.join("whole/model.safetensors")).unwrap(),
        "an interrupted and resumed run ends with the weights of an uninterrupted one"
    );
}

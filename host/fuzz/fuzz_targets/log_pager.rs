//! The log pager: a log written as the server writes it (lines of the
//! fuzzer's making, frames of 1 MiB), read page after page by following
//! "later" links from the start and "earlier" links from the end: every
//! line exactly once, whatever the lines and the page length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orthrus::logs::{LogStore, Window};
use orthrus::nix::StorePath;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mut length = 1 + u64::from(u16::from_le_bytes([data[0], data[1]]));
    let mut text = String::from_utf8_lossy(&data[2..]).into_owned();
    // Half the logs span several frames (1 MiB of text each), read in
    // pages of 64 KiB or more (the server's are 256 KiB): each page
    // decompresses a frame or two, and pages of a few bytes over 2.5 MB
    // timed out the fuzzer (50,000 pages), not the server.
    if data[0] & 1 == 1 && !text.is_empty() {
        text = text.repeat((2_500_000 / text.len()).max(1));
        length += 64 << 10;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::new(dir.path().to_owned());
    let drv = StorePath::parse("/nix/store/i3m7y37jdyi708p9xfrkxr9wn91bv2gf-ok.drv").unwrap();
    let mut writer = store.create(&drv).unwrap();
    let mut expected = Vec::new();
    for line in text.split('\n') {
        writer.write_line(line).unwrap();
        expected.extend_from_slice(line.as_bytes());
        expected.push(b'\n');
    }
    writer.finish().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        assert_eq!(store.read(&drv).unwrap().unwrap(), expected);
        // Forwards.
        let mut shown = Vec::new();
        let mut window = Window::From(0);
        loop {
            let page = store.page(&drv, window, length).await.unwrap().unwrap();
            assert_eq!(page.total, expected.len() as u64);
            shown.extend_from_slice(&page.text);
            if page.to >= page.total {
                break;
            }
            assert!(page.to > page.from || page.to == 0);
            window = Window::From(page.to);
        }
        // Lines longer than the slack are cut: compare only when none is.
        let longest = text.split('\n').map(str::len).max().unwrap_or(0) as u64;
        if longest < 60 << 10 {
            assert_eq!(shown, expected, "forwards");
            // Backwards.
            let mut pages = Vec::new();
            let tail = store.page(&drv, Window::Tail, length).await.unwrap().unwrap();
            let mut from = tail.from;
            pages.push(tail.text);
            while from > 0 {
                let page = store.page(&drv, Window::To(from), length).await.unwrap().unwrap();
                assert!(page.from < from, "earlier pages go back");
                from = page.from;
                pages.push(page.text);
            }
            pages.reverse();
            assert_eq!(pages.concat(), expected, "backwards");
        }
    });
});

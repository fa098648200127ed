//! The serve protocol's reader: what a build machine (perhaps hostile)
//! answers, byte for byte, to the greeting, a path-info query and builds
//! (of a derivation sent whole, then of one in its store).
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use orthrus::nix::{BasicDerivation, BuildOptions, Chunk, Derivation, ServeConnection, ServeOutput, StorePath};

/// The far side's output: the fuzzer's bytes, in chunks of varying size,
/// some on stderr.
struct Replay {
    data: Vec<u8>,
    at: usize,
}

impl ServeOutput for Replay {
    fn poll_chunk(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<Option<Chunk>>> {
        if self.at >= self.data.len() {
            return Poll::Ready(Ok(None));
        }
        let size = 1 + (self.data[self.at] as usize % 64);
        let end = (self.at + 1 + size).min(self.data.len());
        let bytes = self.data[(self.at + 1).min(end)..end].to_vec();
        let stderr = self.data[self.at] & 0x80 != 0;
        self.at = end;
        Poll::Ready(Ok(Some(if stderr { Chunk::Stderr(bytes) } else { Chunk::Stdout(bytes) })))
    }

    fn is_closed(&mut self) -> bool {
        self.at >= self.data.len()
    }
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let output = Box::new(Replay { data: data.to_vec(), at: 0 });
        let input: Pin<Box<dyn tokio::io::AsyncWrite + Send>> = Box::pin(tokio::io::sink());
        let Ok(mut connection) = ServeConnection::open(output, input).await else { return };
        let path = StorePath::parse("/nix/store/00000000000000000000000000000000-x").unwrap();
        let _ = connection.query_valid_paths(std::slice::from_ref(&path)).await;
        let _ = connection.query_path_infos(std::slice::from_ref(&path)).await;
        let drv_path = StorePath::parse("/nix/store/00000000000000000000000000000000-x.drv").unwrap();
        let drv = Derivation::parse(br#"Derive([("out","/nix/store/00000000000000000000000000000000-x","","")],[],[],"x86_64-linux","/bin/sh",[],[])"#).unwrap();
        let basic = BasicDerivation::new(&drv, []);
        let options = BuildOptions { max_silent: Duration::from_secs(1), timeout: Duration::from_secs(1), max_log_size: 1 << 20 };
        let _ = connection.build_derivation(&drv_path, &basic, options, &mut |_| {}).await;
        let _ = connection.build_stored_derivation(&drv_path, options, &mut |_| {}).await;
    });
});

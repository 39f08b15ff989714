//! Labels a peer cannot grow: clients closing with every code from 3000 to 4999, and with
//! codes no registry has, add no more than a handful of `ws_closes_total` series.

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{connect, raw_upgrade, read_to_end, spawn_app, STEP};

/// Opens a connection, closes it with `code` and waits for the server's answer.
async fn close_with(url: String, code: u16) {
    let mut socket = connect(&url).await;
    let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
    socket.send(Message::Close(Some(frame))).await.expect("send close");
    // Until the server's Close arrives and the stream ends.
    tokio::time::timeout(STEP, async { while let Some(Ok(_)) = socket.next().await {} })
        .await
        .expect("closed in time");
}

/// Every `ws_closes_total` series in `metrics`: its label value and count, by label.
fn close_series(metrics: &str) -> Vec<(String, f64)> {
    let mut series: Vec<(String, f64)> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("ws_closes_total{code=\"")?;
            let (label, value) = rest.split_once("\"} ")?;
            Some((label.to_owned(), value.trim().parse().ok()?))
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    series
}

/// Polls `/metrics` until the `ws_closes_total` series add up to `total`.
async fn closes_counted(app: &server::testing::TestServer, total: f64) -> String {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let metrics = app.scrape().await;
        if close_series(&metrics).iter().map(|(_, n)| n).sum::<f64>() >= total {
            return metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "not every close counted:\n{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_thousand_close_codes_make_two_series() {
    let app = spawn_app().await;
    let before = app.scrape().await.len();
    let codes: Vec<u16> = (3000..=4999).collect();
    // 50 at a time: a few seconds in all, without holding 2,000 sockets open.
    for batch in codes.chunks(50) {
        let closing: Vec<_> =
            batch.iter().map(|&code| tokio::spawn(close_with(app.ws_url(), code))).collect();
        for task in closing {
            task.await.expect("client task");
        }
    }
    let metrics = closes_counted(&app, codes.len() as f64).await;
    assert_eq!(
        close_series(&metrics),
        [("private".to_owned(), 1000.0), ("registered".to_owned(), 1000.0)],
        "{metrics}"
    );
    // 2,000 distinct codes once made /metrics 62 KB bigger; now two series (and the other
    // counters' digits).
    assert!(metrics.len() < before + 1000, "{} bytes, {before} before", metrics.len());
}

/// A masked Close frame with `code` and no reason, as a client sends it.
fn masked_close(code: u16) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let payload = code.to_be_bytes();
    let mut frame = vec![0x88, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask).map(|(byte, m)| byte ^ m));
    frame
}

#[tokio::test]
async fn unregistered_codes_and_a_missing_one_stay_in_the_fixed_set() {
    let app = spawn_app().await;
    // Codes no registry assigns: the server answers each with 1002, and counts 1002.
    let invalid = [0, 999, 1004, 1014, 1016, 2999, 5000, u16::MAX];
    for code in invalid {
        let (mut tcp, head) = raw_upgrade(app.addr, "").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        tcp.write_all(&masked_close(code)).await.expect("write close");
        read_to_end(&mut tcp).await;
    }
    // A Close without a code is counted as 1005, one with a registered code as itself.
    let (mut tcp, _) = raw_upgrade(app.addr, "").await;
    tcp.write_all(&[0x88, 0x80, 1, 2, 3, 4]).await.expect("write close");
    read_to_end(&mut tcp).await;
    close_with(app.ws_url(), wire::close::NORMAL).await;

    let metrics = closes_counted(&app, invalid.len() as f64 + 2.0).await;
    assert_eq!(
        close_series(&metrics),
        [
            ("1000".to_owned(), 1.0),
            ("1002".to_owned(), invalid.len() as f64),
            ("1005".to_owned(), 1.0),
        ],
        "{metrics}"
    );
}

//! The parts several berth nodes stand on: a real 3-node Garage cluster as the shared S3 store,
//! reached with `object_store` (the client berth's S3 backend uses), and an nginx round-robin
//! in front of the nodes. These tests show the harness itself holds: what one node writes
//! another reads, the cluster goes on with a node dead, and the balancer really spreads
//! requests over its backends.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, PutPayload, RetryConfig, WriteMultipart};

use common::balancer::Balancer;
use common::garage::{garage, Garage};
use common::nginx::Nginx;
use common::upstream::free_port;

const MIB: usize = 1024 * 1024;

/// A client of `bucket` through `endpoint`, with the options Garage needs: path-style
/// addressing, its region, plain HTTP.
fn store_at(garage: &Garage, endpoint: &str, bucket: &str, retry: RetryConfig) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region(garage.region())
        .with_access_key_id(garage.access_key_id())
        .with_secret_access_key(garage.secret_access_key())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_retry(retry)
        .build()
        .unwrap()
}

fn store(garage: &Garage, node: usize, bucket: &str) -> AmazonS3 {
    store_at(
        garage,
        &garage.endpoint(node),
        bucket,
        RetryConfig::default(),
    )
}

/// `len` bytes that differ from one call (`seed`) to another and do not repeat within.
fn data(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

async fn get(store: &AmazonS3, path: &Path) -> Bytes {
    store.get(path).await.unwrap().bytes().await.unwrap()
}

/// Asserts equality without printing megabytes on failure.
fn assert_same(got: &Bytes, want: &Bytes, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    assert!(got == want, "{what}: bytes differ");
}

async fn multipart(store: &AmazonS3, path: &Path, body: &Bytes) {
    let upload = store.put_multipart(path).await.unwrap();
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 * MIB);
    writer.put(body.clone());
    writer.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_nodes_share_objects_and_go_on_with_one_dead() {
    let g = tokio::task::spawn_blocking(garage).await.unwrap();
    eprintln!("garage cluster started in {:?}", g.started_in);
    let bucket = g.new_bucket("shared-smoke");
    let (s0, s1, s2) = (
        store(g, 0, &bucket),
        store(g, 1, &bucket),
        store(g, 2, &bucket),
    );

    // What node 0 stores, node 1 serves, byte for byte; listing through node 2 sees it.
    let body = data(10 * MIB, 1);
    let path = Path::from("blobs/sha256/ab/one");
    s0.put(&path, PutPayload::from(body.clone())).await.unwrap();
    assert_same(
        &get(&s1, &path).await,
        &body,
        "PUT via node 0, GET via node 1",
    );
    let listed: Vec<_> = s2
        .list(Some(&Path::from("blobs")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].location, path);
    assert_eq!(listed[0].size as usize, body.len());

    // A multipart upload (three parts) through node 1 reads back through node 0.
    let big = data(12 * MIB + 123, 2);
    let parts = Path::from("uploads/multipart");
    multipart(&s1, &parts, &big).await;
    assert_same(&get(&s0, &parts).await, &big, "multipart via node 1");
    // A ranged read, as a resumed blob GET does.
    let range = s0
        .get_range(&parts, 5 * MIB as u64..6 * MIB as u64)
        .await
        .unwrap();
    assert_same(&range, &big.slice(5 * MIB..6 * MIB), "range read");

    // The same object through a round-robin over the three nodes: SigV4 signs the Host, so this
    // holds only if the balancer passes the client's Host on.
    let lb = Balancer::start(&(0..3).map(|i| g.s3_addr(i)).collect::<Vec<_>>());
    let via_lb = store_at(g, &lb.base_url(), &bucket, RetryConfig::default());
    for _ in 0..6 {
        assert_same(&get(&via_lb, &path).await, &body, "GET via the balancer");
    }
    lb.wait_logged(6);
    assert_eq!(lb.per_backend(), vec![2, 2, 2], "{:?}", lb.requests());

    // Node 2 dies: reads and writes through the others go on (quorum 2 of 3).
    let small = data(MIB, 3);
    let before = Instant::now();
    s0.put(&Path::from("timing/up"), PutPayload::from(small.clone()))
        .await
        .unwrap();
    let put_up = before.elapsed();
    g.kill(2);
    let written_while_down = data(10 * MIB, 4);
    let down_path = Path::from("blobs/sha256/cd/while-down");
    let before = Instant::now();
    s0.put(&down_path, PutPayload::from(written_while_down.clone()))
        .await
        .unwrap();
    let put_down = before.elapsed();
    let before = Instant::now();
    assert_same(
        &get(&s1, &down_path).await,
        &written_while_down,
        "node 2 down",
    );
    let get_down = before.elapsed();
    assert_same(&get(&s1, &path).await, &body, "older object, node 2 down");
    multipart(&s0, &Path::from("uploads/while-down"), &big).await;
    let before = Instant::now();
    s1.put(&Path::from("timing/down"), PutPayload::from(small.clone()))
        .await
        .unwrap();
    eprintln!(
        "1 MiB PUT with all nodes up: {put_up:?}; with node 2 down: {:?}; 10 MiB PUT / GET with node 2 down: {put_down:?} / {get_down:?}",
        before.elapsed()
    );

    // The dead node's own endpoint refuses connections: an error, quickly with few retries.
    let quick = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
    };
    let dead = store_at(g, &g.endpoint(2), &bucket, quick);
    let before = Instant::now();
    let err = dead.get(&path).await.expect_err("node 2 is dead");
    eprintln!(
        "GET through the dead node: {:?} after {:?}",
        err.to_string(),
        before.elapsed()
    );
    drop(s2);

    // Back up, node 2 serves what was written while it was down.
    let before = Instant::now();
    g.restart(2);
    eprintln!("node 2 restarted and rejoined in {:?}", before.elapsed());
    let s2 = store(g, 2, &bucket);
    assert_same(
        &get(&s2, &down_path).await,
        &written_while_down,
        "node 2 after restart",
    );
}

/// The balancer in front of three trivial backends that each say who they are and which
/// forwarding headers they got.
#[tokio::test]
async fn balancer_round_robins_and_forwards_headers() {
    let work = tempfile::tempdir().unwrap();
    let backends: Vec<Nginx> = (0..3)
        .map(|i| {
            let port = free_port();
            let server = format!(
                "server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n    location / {{\n      return 200 \"backend{i} $http_host|$http_x_forwarded_for|$http_x_forwarded_proto|$http_x_forwarded_host\";\n    }}\n  }}"
            );
            Nginx::start(port, &server, &work.path().join(format!("b{i}")))
        })
        .collect();
    let addrs: Vec<String> = backends
        .iter()
        .map(|b| format!("127.0.0.1:{}", b.port))
        .collect();
    let lb = Balancer::start(&addrs);
    let client = reqwest::Client::new();

    // One client on one kept-alive connection still lands on each backend in turn.
    let mut answered = Vec::new();
    for _ in 0..30 {
        let text = common::get_bytes(&client, &format!("{}/v2/", lb.base_url())).await;
        let text = String::from_utf8(text.to_vec()).unwrap();
        let (who, headers) = text.split_once(' ').unwrap();
        assert_eq!(
            headers,
            format!("{0}|127.0.0.1|http|{0}", lb.addr()),
            "Host and X-Forwarded-* as the backend saw them"
        );
        answered.push(who.to_owned());
    }
    for pair in answered.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "the same backend twice in a row: {answered:?}"
        );
    }
    for i in 0..3 {
        let n = answered
            .iter()
            .filter(|w| **w == format!("backend{i}"))
            .count();
        assert_eq!(n, 10, "backend{i}: {answered:?}");
    }

    // A body larger than nginx's default 1 MiB limit passes.
    let put = client
        .put(format!("{}/v2/upload", lb.base_url()))
        .body(vec![7u8; 3 * MIB])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    lb.wait_logged(31);
    let requests = lb.requests();
    assert_eq!(requests.len(), 31, "{requests:?}");
    // The log agrees with what the client saw: each backend answered 10 of the GETs. (The
    // PUT's backend is not checked: one that answers before reading a 3 MiB body may be
    // retried on the next by nginx.)
    for backend in &addrs {
        let n = requests
            .iter()
            .filter(|(a, _, m, _)| a == backend && m == "GET")
            .count();
        assert_eq!(n, 10, "{backend} answered {n} GETs: {requests:?}");
    }
    assert!(requests
        .iter()
        .any(|(_, s, m, u)| *s == 200 && m == "PUT" && u == "/v2/upload"));
}

/// PUT and GET of 100 MiB through one node, single-request and multipart; prints MiB/s.
/// `cargo test --release --test shared_store -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput_of_100_mib_through_one_node() {
    let g = tokio::task::spawn_blocking(garage).await.unwrap();
    eprintln!("garage cluster started in {:?}", g.started_in);
    let bucket = g.new_bucket("throughput");
    let s0 = Arc::new(store(g, 0, &bucket));
    let body = data(100 * MIB, 9);
    let mib = body.len() as f64 / MIB as f64;
    let rate = |d: Duration| mib / d.as_secs_f64();

    let path = Path::from("big/single");
    let before = Instant::now();
    s0.put(&path, PutPayload::from(body.clone())).await.unwrap();
    let d = before.elapsed();
    eprintln!("single PUT 100 MiB: {d:?} ({:.0} MiB/s)", rate(d));

    // Without the payload's SHA-256 in the signature (`x-amz-content-sha256: UNSIGNED-PAYLOAD`).
    let unsigned = AmazonS3Builder::new()
        .with_endpoint(g.endpoint(0))
        .with_bucket_name(&bucket)
        .with_region(g.region())
        .with_access_key_id(g.access_key_id())
        .with_secret_access_key(g.secret_access_key())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_unsigned_payload(true)
        .build()
        .unwrap();
    let unsigned_path = Path::from("big/unsigned");
    let before = Instant::now();
    unsigned
        .put(&unsigned_path, PutPayload::from(body.clone()))
        .await
        .unwrap();
    let d = before.elapsed();
    eprintln!(
        "single PUT 100 MiB, unsigned payload: {d:?} ({:.0} MiB/s)",
        rate(d)
    );
    assert_same(
        &get(&s0, &unsigned_path).await,
        &body,
        "unsigned PUT read back",
    );

    let multi = Path::from("big/multipart");
    let before = Instant::now();
    let upload = s0.put_multipart(&multi).await.unwrap();
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * MIB);
    writer.put(body.clone());
    writer.finish().await.unwrap();
    let d = before.elapsed();
    eprintln!(
        "multipart PUT 100 MiB (8 MiB parts): {d:?} ({:.0} MiB/s)",
        rate(d)
    );

    for p in [&path, &multi] {
        let before = Instant::now();
        let got = get(&s0, p).await;
        let d = before.elapsed();
        assert_same(&got, &body, "100 MiB read back");
        eprintln!("GET {p} 100 MiB: {d:?} ({:.0} MiB/s)", rate(d));
    }
    let before = Instant::now();
    let mut stream = s0.get(&path).await.unwrap().into_stream();
    let mut n = 0;
    while let Some(chunk) = stream.try_next().await.unwrap() {
        n += chunk.len();
    }
    assert_eq!(n, body.len());
    let d = before.elapsed();
    eprintln!("streamed GET 100 MiB: {d:?} ({:.0} MiB/s)", rate(d));
}

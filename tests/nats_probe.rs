use spur::config::NatsConfig;
use spur::nats::Cluster;
use spur::testing::nats::NatsServer;

#[tokio::test(flavor = "multi_thread")]
async fn probe() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let cluster = Cluster::connect(&NatsConfig {
        servers: vec![server.url()],
        ..NatsConfig::default()
    })
    .await
    .unwrap();
    let js = cluster.jetstream();
    let stream = js.get_stream_no_info("spur").await.unwrap();
    js.publish("spur.st.x", "1".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let t = std::time::Instant::now();
    for _ in 0..200 {
        stream
            .direct_get_last_for_subject("spur.st.x")
            .await
            .unwrap();
    }
    println!("direct get {:?}", t.elapsed() / 200);
    let t = std::time::Instant::now();
    for _ in 0..200 {
        js.publish("spur.st.x", "1".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    println!("publish {:?}", t.elapsed() / 200);
    let c2 = cluster.clone();
    let t = std::time::Instant::now();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Handle::current();
        let _ = rt;
    });
    let h = tokio::runtime::Handle::current();
    let js2 = js.clone();
    let s2 = stream.clone();
    std::thread::spawn(move || {
        let t = std::time::Instant::now();
        for _ in 0..200 {
            h.block_on(s2.direct_get_last_for_subject("spur.st.x"))
                .unwrap();
        }
        println!("direct get from thread {:?}", t.elapsed() / 200);
        let t = std::time::Instant::now();
        for _ in 0..200 {
            h.block_on(async {
                js2.publish("spur.st.x", "1".into())
                    .await
                    .unwrap()
                    .await
                    .unwrap()
            });
        }
        println!("publish from thread {:?}", t.elapsed() / 200);
    })
    .join()
    .unwrap();
    let _ = (c2, t);
}

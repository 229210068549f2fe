//! Service discovery, the consul-template way: render nginx upstreams over the live
//! instances, reload nginx only when the file changed, and fall back to a "force a 502"
//! upstream when nothing runs. Real nginx (Debian's), real instances.

mod common;
use common::Workspace;
use common::services::{Nginx, http_get};

#[test]
fn nginx_upstreams_follow_the_live_instances() {
    let ws = Workspace::seed();
    let upstreams = ws.path().join("nginx/upstreams.conf");
    // Before any deploy: the fallback, and nginx answers 502.
    // Reloading runs `nginx -s reload`: it reads the workspace's upstreams and nginx's own
    // files, and signals the running nginx; the step grants exactly that.
    let render = |ws: &Workspace, reload: &[String], prefix: Option<&std::path::Path>| {
        let reload: Vec<String> = reload.iter().map(|a| format!("\"{a}\"")).collect();
        let allow = match prefix {
            Some(p) => format!(
                "    allow: {{ read: [nginx], host-write: [\"{}\"], signal: true }}\n",
                p.display()
            ),
            None => String::new(),
        };
        ws.write(
            "render.yml",
            &format!(
                "name: render\nsteps:\n  - id: discover\n    uses: builtin:render\n{allow}    with:\n      template: templates/upstreams.conf.tmpl\n      output: nginx/upstreams.conf\n      services: [seed]\n      reload: [{}]\n",
                reload.join(", ")
            ),
        );
        let run = ws.wharf(&["run", "render.yml", "-v"]);
        assert_eq!(run.code(), 0, "{}", run.all());
        run
    };
    let first = render(&ws, &[], None);
    assert_eq!(first.output_of("discover", "instances").unwrap(), "0");
    let text = std::fs::read_to_string(&upstreams).unwrap();
    assert!(
        text.contains("server 127.0.0.1:65535;  # no instance is live: force a 502"),
        "{text}"
    );

    let nginx = Nginx::start(&upstreams);
    let front = format!("http://127.0.0.1:{}/api/v1/version", nginx.port);
    assert_eq!(http_get(&front).unwrap().0, 502);

    // Deploy two instances; the pipeline's own render step writes them (no reload there).
    let deploy = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(deploy.code(), 0, "{}", deploy.all());
    let version = deploy.output_of("version", "version").unwrap();
    let text = std::fs::read_to_string(&upstreams).unwrap();
    let urls = ws.running_urls("seed");
    assert_eq!(urls.len(), 2);
    for url in &urls {
        let addr = url.trim_start_matches("http://");
        assert!(
            text.contains(&format!("server {addr} weight=1;")),
            "{addr} missing from:\n{text}"
        );
    }
    assert!(!text.contains("65535"), "{text}");

    // Unchanged file: no reload. Then a change (the fallback file restored) is reloaded.
    let unchanged = render(&ws, &nginx.reload_command(), Some(nginx.prefix()));
    assert_eq!(unchanged.output_of("discover", "changed").unwrap(), "false");
    assert!(
        unchanged.stdout().contains("unchanged; no reload"),
        "{}",
        unchanged.all()
    );
    assert_eq!(
        http_get(&front).unwrap().0,
        502,
        "nginx was reloaded although nothing changed"
    );

    std::fs::write(&upstreams, "upstream seed { server 127.0.0.1:65535; }\n").unwrap();
    let changed = render(&ws, &nginx.reload_command(), Some(nginx.prefix()));
    assert_eq!(changed.output_of("discover", "changed").unwrap(), "true");
    assert!(changed.stdout().contains("reloaded with `nginx"), "{}", changed.all());
    // The reload is asynchronous in nginx; the new workers take over shortly.
    let mut answer = None;
    for _ in 0..50 {
        answer = http_get(&front);
        if matches!(&answer, Some((200, _))) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, body) = answer.unwrap();
    assert_eq!(
        (status, body.trim()),
        (200, version.as_str()),
        "nginx error log: {}",
        std::fs::read_to_string(nginx.error_log()).unwrap_or_default()
    );
}

//! `openkcm keysvc` configuration: precedence (defaults < file < environment < flags), all
//! bad values reported together, the seed's variables, and secrets kept out of `Debug`.

mod support;

use std::net::SocketAddr;

use clap::Parser;
use keysvc::config::{
    load_serve, load_store_settings, ConfigErrors, ConfigFlags, ConfigSources, DatabaseConfig,
    ServeConfig,
};
use support::Pki;

/// The flags a valid configuration needs besides the tested keys (TLS files, gateway,
/// root key), as the test PKI writes them.
fn base_flags(pki: &Pki) -> ConfigFlags {
    ConfigFlags {
        listen_api: None,
        listen_management: None,
        database: None,
        ..pki.flags("sqlite://unused.db")
    }
}

fn load(sources: &ConfigSources) -> ServeConfig {
    load_serve(sources).unwrap_or_else(|e| panic!("{e}")).0
}

fn errors(sources: &ConfigSources) -> ConfigErrors {
    match load_serve(sources) {
        Ok((config, _)) => panic!("accepted: {config:?}"),
        Err(e) => e,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

#[test]
fn defaults_then_file_then_environment_then_flags() {
    let pki = Pki::generate();
    let file = pki.write(
        "keysvc.toml",
        r#"
        [listen]
        api = "127.0.0.1:1001"
        management = "127.0.0.1:2001"
        [cache]
        capacity = 11
        ttl = "11s"
        [limits]
        max_body_size = 4096
        "#,
    );

    let defaults = load(&ConfigSources::new(base_flags(&pki)));
    assert_eq!(defaults.api_addr, addr("127.0.0.1:9443"));
    assert_eq!(defaults.management_addr, addr("127.0.0.1:9090"));
    assert_eq!(defaults.max_body_size, 1024 * 1024);
    assert_eq!(defaults.cache.capacity, 100_000);
    assert!(
        matches!(&defaults.store.database, DatabaseConfig::Sqlite { url } if url == "sqlite://./keys.db")
    );

    let with_file = ConfigFlags {
        config: Some(file),
        ..base_flags(&pki)
    };
    let from_file = load(&ConfigSources::new(with_file.clone()));
    assert_eq!(from_file.api_addr, addr("127.0.0.1:1001"));
    assert_eq!(from_file.management_addr, addr("127.0.0.1:2001"));
    assert_eq!(from_file.cache.capacity, 11);
    assert_eq!(from_file.cache.ttl.as_secs(), 11);
    assert_eq!(from_file.max_body_size, 4096);

    let env = ConfigSources::new(with_file.clone())
        .env("OPENKCM_LISTEN__API", "127.0.0.1:1002")
        .env("OPENKCM_CACHE__CAPACITY", "22");
    let from_env = load(&env);
    assert_eq!(from_env.api_addr, addr("127.0.0.1:1002"));
    assert_eq!(from_env.cache.capacity, 22);
    assert_eq!(
        from_env.management_addr,
        addr("127.0.0.1:2001"),
        "file value kept"
    );

    let flags = ConfigSources {
        flags: ConfigFlags {
            listen_api: Some("127.0.0.1:1003".into()),
            ..with_file
        },
        ..env
    };
    let from_flags = load(&flags);
    assert_eq!(from_flags.api_addr, addr("127.0.0.1:1003"));
    assert_eq!(from_flags.cache.capacity, 22, "env value kept");
    assert_eq!(from_flags.max_body_size, 4096, "file value kept");
}

#[test]
fn every_bad_value_is_reported_at_once_with_its_origin() {
    let pki = Pki::generate();
    let file = pki.write(
        "bad.toml",
        r#"
        [listen]
        api = "localhost"
        [limits]
        max_body_size = 12
        [cache]
        capacity = 0
        [gateway]
        allowed_identities = []
        colour = "blue"
        "#,
    );
    let sources = ConfigSources::new(ConfigFlags {
        config: Some(file.clone()),
        listen_management: Some("nine-thousand-ninety".into()),
        tls_key: Some(pki.path_text("missing-key.pem")),
        ..pki.flags("sqlite://x.db")
    })
    .env("OPENKCM_CACHE__TTL", "soon")
    .env("OPENKCM_DATABASE__URL", "mysql://db/keys")
    .env("OPENKCM_LOG__LEVEL", "[[[")
    .env("OPENKCM_ROOT_KEY__ID", "bad id!");
    // Flags beat the environment: drop those whose environment value is under test.
    let sources = ConfigSources {
        flags: ConfigFlags {
            listen_api: None,
            database: None,
            root_key_id: None,
            allow_gateway: Vec::new(),
            ..sources.flags
        },
        ..sources
    };
    let e = errors(&sources);
    let report = e.to_string();
    for key in [
        "listen.api",
        "listen.management",
        "limits.max_body_size",
        "cache.capacity",
        "cache.ttl",
        "database.url",
        "log.level",
        "tls.key",
        "gateway.allowed_identities",
        "gateway.colour",
        "root_key.id",
    ] {
        assert!(e.mentions(key), "{key} not reported in:\n{report}");
    }
    assert!(report.contains("flag --listen-management"), "{report}");
    assert!(
        report.contains("environment variable OPENKCM_CACHE__TTL"),
        "{report}"
    );
    assert!(report.contains(&file.display().to_string()), "{report}");
    assert!(report.contains("missing-key.pem"), "{report}");
}

#[test]
fn gateways_are_allowed_by_san_uri_only() {
    let pki = Pki::generate();
    let sources = ConfigSources::new(ConfigFlags {
        allow_gateway: vec![
            "openkcm-gateway".into(),
            "gateway.openkcm-system.svc".into(),
            "spiffe://cluster.local/ns/openkcm-system/sa/openkcm-gateway".into(),
        ],
        ..base_flags(&pki)
    });
    let report = errors(&sources).to_string();
    assert!(
        report.contains("openkcm-gateway, gateway.openkcm-system.svc are not URIs"),
        "{report}"
    );
    assert!(report.contains("SAN URI only"), "{report}");
}

#[test]
fn tenant_isolation_cannot_be_disabled() {
    let pki = Pki::generate();
    let refused =
        errors(&ConfigSources::new(base_flags(&pki)).env("TENANT_ISOLATION_ENABLED", "false"));
    assert!(refused.mentions("tenant_isolation_enabled"));
    assert!(
        refused.to_string().contains("cannot be disabled"),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("TENANT_ISOLATION_ENABLED"),
        "{refused}"
    );

    let garbage =
        errors(&ConfigSources::new(base_flags(&pki)).env("TENANT_ISOLATION_ENABLED", "sometimes"));
    assert!(garbage.mentions("tenant_isolation_enabled"), "{garbage}");

    load(&ConfigSources::new(base_flags(&pki)).env("TENANT_ISOLATION_ENABLED", "true"));
    load(&ConfigSources::new(base_flags(&pki)));
}

#[test]
fn postgres_connection_is_honoured_and_more_specific_sources_win() {
    let pki = Pki::generate();
    let seed = ConfigSources::new(base_flags(&pki))
        .env("POSTGRES_CONNECTION", "postgres://app:pw@db:5432/keys");
    match load(&seed).store.database {
        DatabaseConfig::Postgres {
            url,
            dev,
            max_connections,
            ..
        } => {
            assert_eq!(url.expose(), "postgres://app:pw@db:5432/keys");
            assert!(!dev);
            assert_eq!(max_connections, 16);
        }
        other => panic!("{other:?}"),
    }
    let specific = seed
        .clone()
        .env("OPENKCM_DATABASE__URL", "sqlite://specific.db");
    assert!(
        matches!(load(&specific).store.database, DatabaseConfig::Sqlite { url } if url == "sqlite://specific.db")
    );
    let flagged = ConfigSources {
        flags: ConfigFlags {
            database: Some("postgres://postgres@localhost/dev".into()),
            dev: true,
            ..base_flags(&pki)
        },
        ..specific
    };
    assert!(matches!(
        load(&flagged).store.database,
        DatabaseConfig::Postgres { dev: true, .. }
    ));
}

#[test]
fn postgres_tls_parameters_survive_every_source_and_bad_ones_are_reported() {
    let pki = Pki::generate();
    // Any PEM certificate and key will do for the check; the connection is not made here.
    let url = format!(
        "postgres://app@db:5432/keys?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        pki.path_text("ca.pem"),
        pki.path_text("server.pem"),
        pki.path_text("server-key.pem")
    );
    let file = pki.write("db.toml", &format!("[database]\nurl = \"{url}\"\n"));
    let sources = [
        (
            "--database",
            ConfigSources::new(ConfigFlags {
                database: Some(url.clone()),
                ..base_flags(&pki)
            }),
        ),
        (
            "POSTGRES_CONNECTION",
            ConfigSources::new(base_flags(&pki)).env("POSTGRES_CONNECTION", &url),
        ),
        (
            "the file",
            ConfigSources::new(ConfigFlags {
                config: Some(file),
                ..base_flags(&pki)
            }),
        ),
    ];
    for (source, sources) in sources {
        match load(&sources).store.database {
            DatabaseConfig::Postgres { url: loaded, .. } => {
                assert_eq!(loaded.expose(), url, "{source}");
                // Shown in logs as given: file paths are not secrets.
                assert_eq!(loaded.to_string(), url, "{source}");
            }
            other => panic!("{source}: {other:?}"),
        }
    }

    for (query, says) in [
        ("sslmode=verify-ca", "sslmode=verify-ca is not supported"),
        (
            "sslmode=verify-full&sslkey=/k.pem",
            "sslkey without sslcert",
        ),
        (
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
            "sslrootcert: cannot read /nonexistent/ca.crt",
        ),
    ] {
        let bad = ConfigSources::new(base_flags(&pki)).env(
            "POSTGRES_CONNECTION",
            &format!("postgres://app:hunter2-secret@db/keys?{query}"),
        );
        let e = errors(&bad).to_string();
        assert!(e.contains("database.url") && e.contains(says), "{e}");
        assert!(!e.contains("hunter2-secret"), "{e}");
    }
}

#[test]
fn secrets_never_appear_in_debug_output_or_errors() {
    let pki = Pki::generate();
    let root_key = std::fs::read_to_string(pki.path("root.key")).expect("root key");
    let sources = ConfigSources::new(ConfigFlags {
        root_key_file: None,
        ..base_flags(&pki)
    })
    .env("OPENKCM_ROOT_KEY", root_key.trim())
    .env(
        "POSTGRES_CONNECTION",
        "postgres://app:hunter2-secret@db/keys",
    );
    let config = load(&sources);
    let shown = format!("{config:?} {sources:?}");
    assert!(
        !shown.contains(root_key.trim()),
        "root key printed: {shown}"
    );
    assert!(
        !shown.contains("hunter2-secret"),
        "password printed: {shown}"
    );
    assert!(
        shown.contains("root-a"),
        "the key id is not secret: {shown}"
    );

    // A malformed secret is reported without being echoed.
    let bad = ConfigSources::new(ConfigFlags {
        root_key_file: None,
        database: Some("postgres://app:hunter2-secret@db:notaport/keys".into()),
        ..base_flags(&pki)
    })
    .env("OPENKCM_ROOT_KEY", "c2VjcmV0LWJ1dC10b28tc2hvcnQ=");
    let e = errors(&bad).to_string();
    assert!(
        e.contains("root_key.value") && e.contains("database.url"),
        "{e}"
    );
    assert!(
        !e.contains("c2VjcmV0LWJ1dC10b28tc2hvcnQ=") && !e.contains("hunter2-secret"),
        "{e}"
    );
}

#[test]
fn lists_and_previous_root_keys_come_from_any_source() {
    let pki = Pki::generate();
    pki.write_root_key("old-1.key", "old-1");
    pki.write_root_key("old-2.key", "old-2");
    let file = pki.write(
        "keys.toml",
        &format!(
            "[root_key]\nprevious = [{{ id = \"old-1\", file = {:?} }}]\n",
            pki.path_text("old-1.key")
        ),
    );
    let sources = ConfigSources::new(ConfigFlags {
        config: Some(file),
        allow_gateway: Vec::new(),
        ..base_flags(&pki)
    })
    .env(
        "OPENKCM_GATEWAY__ALLOWED_IDENTITIES",
        "spiffe://x/gw-1, spiffe://x/gw-2",
    );
    let config = load(&sources);
    assert_eq!(config.gateways, ["spiffe://x/gw-1", "spiffe://x/gw-2"]);

    let env_previous = sources.env(
        "OPENKCM_ROOT_KEY__PREVIOUS",
        &format!("old-2={}", pki.path_text("old-2.key")),
    );
    let settings = load_store_settings(&env_previous)
        .unwrap_or_else(|e| panic!("{e}"))
        .0;
    assert_eq!(settings.keyring.current_id(), "root-a");
}

#[test]
fn command_line_flags_parse_into_config_flags() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: ConfigFlags,
    }
    let cli = Cli::try_parse_from([
        "keysvc",
        "--listen-api",
        "0.0.0.0:9443",
        "--allow-gateway",
        "a",
        "--allow-gateway",
        "b",
        "--previous-root-key",
        "old=/k",
        "--dev",
    ])
    .expect("flags parse");
    assert_eq!(cli.flags.listen_api.as_deref(), Some("0.0.0.0:9443"));
    assert_eq!(cli.flags.allow_gateway, ["a", "b"]);
    assert_eq!(cli.flags.previous_root_keys, ["old=/k"]);
    assert!(cli.flags.dev);
}

#[test]
fn rotation_settings_put_the_new_key_first_and_keep_the_configured_ones() {
    use keysvc::config::load_rotation;
    use keysvc::envelope::RootKey;
    let pki = Pki::generate();
    let new_file = pki.write_root_key("root-b.key", "root-b");
    let new_key = || {
        let text = std::fs::read_to_string(&new_file).expect("new key");
        RootKey::from_base64("root-b", &text).expect("new key")
    };
    // Configured: A current. Rotation keyring: B current (A still unwraps).
    let sources = ConfigSources::new(base_flags(&pki));
    let (settings, _) = load_rotation(&sources, new_key()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings.keyring.current_id(), "root-b");

    // Configured: B current, A previous (keysvc already wraps under B): accepted as is.
    let switched = ConfigSources::new(ConfigFlags {
        root_key_id: Some("root-b".into()),
        root_key_file: Some(new_file.display().to_string()),
        previous_root_keys: vec![format!("root-a={}", pki.path_text("root.key"))],
        ..base_flags(&pki)
    });
    let (settings, _) = load_rotation(&switched, new_key()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings.keyring.current_id(), "root-b");

    // The same id with other material, or a retired key, is refused.
    let impostor = RootKey::generate("root-b").expect("key");
    assert!(load_rotation(&switched, impostor).is_err());
    let retired = RootKey::from_base64(
        "root-a",
        &std::fs::read_to_string(pki.path("root.key")).expect("key A"),
    )
    .expect("key A");
    let e = load_rotation(&switched, retired).expect_err("rotating back to a retired key");
    assert!(e.mentions("root_key.previous"), "{e}");
}

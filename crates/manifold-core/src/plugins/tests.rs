use super::policy::host_option;
use super::*;

fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
}

fn pg(host: &str, options: &[(&str, &str)]) -> PluginSpec {
    PluginSpec {
        postgres: Some(PostgresPlugin {
            host: host.into(),
            port: 5433,
            database: "sales".into(),
            remote_schema: "public".into(),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }),
        steampipe: None,
        fdw: None,
    }
}

fn pg_plugin() -> PluginSpec {
    pg("db", &[("fetch_size", "1000")])
}

fn creds() -> BTreeMap<String, Vec<u8>> {
    secret(&[("user", "u"), ("password", "p")])
}

fn open() -> SourcePolicy {
    SourcePolicy::default()
}

fn invalid(result: Result<Wrapper, PluginError>) -> String {
    match result {
        Err(PluginError::Invalid(message)) => message,
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

#[test]
fn postgres_maps_fields_to_server_and_secret_to_mapping() {
    let w = resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "u"), ("password", "p"), ("other", "x")])), &open()).unwrap();
    assert_eq!(w.extension, "postgres_fdw");
    let opts: Vec<_> = w.server_options.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(opts, [("host", "db"), ("port", "5433"), ("dbname", "sales"), ("fetch_size", "1000"), ("connect_timeout", "10")]);
    let mapping: Vec<_> = w.mapping_options.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(mapping, [("user", "u"), ("password", "p")]);
}

#[test]
fn postgres_needs_a_user_and_a_password() {
    let err = resolve(&pg_plugin(), "sales", Some(&secret(&[("password", "p")])), &open()).unwrap_err();
    assert_eq!(err, PluginError::SecretKeyMissing("user".into()));
    let err = resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "postgres")])), &open()).unwrap_err();
    assert_eq!(err, PluginError::SecretKeyMissing("password".into()));
    invalid(resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "u"), ("password", "")])), &open()));
    invalid(resolve(&pg_plugin(), "sales", None, &open()));
}

#[test]
fn sources_are_network_endpoints_with_allowed_options_only() {
    for host in ["/var/run/postgresql", "/tmp", "db,/tmp", "@x"] {
        assert!(invalid(resolve(&pg(host, &[]), "s", Some(&creds()), &open())).contains("network endpoints"), "{host}");
    }
    for option in
        ["passfile", "service", "sslkey", "sslcert", "sslrootcert", "sslpassword", "hostaddr", "require_auth", "host", "password_required"]
    {
        let message = invalid(resolve(&pg("db", &[(option, "/etc/passwd")]), "s", Some(&creds()), &open()));
        assert!(message.contains(option) && !message.contains("/etc/passwd"), "{message}");
    }
    for option in POSTGRES_OPTIONS.iter().filter(|o| **o != "connect_timeout") {
        assert!(resolve(&pg("db", &[(option, "1")]), "s", Some(&creds()), &open()).is_ok(), "{option}");
    }
}

#[test]
fn every_server_gets_a_bounded_connect_timeout() {
    let timeout = |options: &[(&str, &str)]| {
        let w = resolve(&pg("db", options), "s", Some(&creds()), &open()).unwrap();
        w.server_options.iter().find(|(k, _)| k == "connect_timeout").unwrap().1.expose().to_owned()
    };
    assert_eq!(timeout(&[]), "10");
    assert_eq!(timeout(&[("connect_timeout", "3")]), "3");
    assert_eq!(timeout(&[("connect_timeout", "600")]), "10");
    invalid(resolve(&pg("db", &[("connect_timeout", "0")]), "s", Some(&creds()), &open()));
    invalid(resolve(&pg("db", &[("connect_timeout", "soon")]), "s", Some(&creds()), &open()));
}

#[test]
fn the_admin_fences_source_hosts() {
    let fence = HostFence::parse(&["*.svc.cluster.local".into(), "db.example.com".into(), "10.0.0.0/8".into(), "fd00::/8".into()]).unwrap();
    for ok in ["sales.shop.svc.cluster.local", "DB.example.com.", "10.1.2.3", "fd12::1"] {
        assert!(fence.allows(ok), "{ok}");
    }
    for bad in ["svc.cluster.local", "evil-svc.cluster.local", "example.com", "127.0.0.1", "11.0.0.1", "::1", "db.example.com.evil"] {
        assert!(!fence.allows(bad), "{bad}");
    }
    let policy = SourcePolicy { hosts: fence, ..Default::default() };
    assert!(invalid(resolve(&pg("127.0.0.1", &[]), "s", Some(&creds()), &policy)).contains("outside"));
    assert!(HostFence::parse(&["10.0.0.0/33".into()]).is_err());
    assert!(HostFence::parse(&["/tmp".into()]).is_err());
    assert!(HostFence::default().allows("anything"));
}

#[test]
fn nul_bytes_are_refused_without_showing_the_value() {
    let err = resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "u"), ("password", "se\0cret")])), &open()).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("NUL") && message.contains("password") && !message.contains("se\0cret"));
}

#[test]
fn steampipe_appends_secret_keys_as_escaped_hcl() {
    let plugin = PluginSpec {
        postgres: None,
        steampipe: Some(SteampipePlugin { name: "aws".into(), config: Some("regions = [\"*\"]".into()) }),
        fdw: None,
    };
    let w = resolve(&plugin, "aws_prod", Some(&secret(&[("secret_key", "a\"b\\c${env}%{x}\nd")])), &open()).unwrap();
    assert_eq!(w.extension, "steampipe_postgres_aws");
    assert_eq!(w.remote_schema, "aws_prod");
    assert_eq!(w.server_options[0].1.expose(), "regions = [\"*\"]\nsecret_key = \"a\\\"b\\\\c$${env}%%{x}\\nd\"\n");
    // Each credential is redacted on its own, not only the whole config.
    assert_eq!(w.embedded_secrets.iter().map(|s| s.expose()).collect::<Vec<_>>(), ["a\"b\\c${env}%{x}\nd"]);
    let bad = resolve(&plugin, "aws", Some(&secret(&[("not valid", "x")])), &open()).unwrap_err();
    assert!(matches!(bad, PluginError::Invalid(_)));
}

#[test]
fn hcl_strings_keep_lone_dollars_and_percents() {
    assert_eq!(hcl_string("$5 and 10%"), "\"$5 and 10%\"");
    assert_eq!(hcl_string("$${x}"), "\"$$${x}\"");
}

fn mysql(extension: &str, options: &[(&str, &str)]) -> PluginSpec {
    PluginSpec {
        postgres: None,
        steampipe: None,
        fdw: Some(FdwPlugin {
            extension: extension.into(),
            wrapper: "mysql_fdw".into(),
            server_options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            remote_schema: "shop".into(),
        }),
    }
}

fn mysql_allowed() -> SourcePolicy {
    SourcePolicy {
        wrappers: vec![AllowedWrapper {
            extension: "mysql_fdw".into(),
            wrapper: "mysql_fdw".into(),
            server_options: vec!["host".into(), "port".into()],
            user_mapping_options: vec!["username".into(), "password".into()],
            host_options: host_option(),
        }],
        ..Default::default()
    }
}

#[test]
fn fdw_uses_only_what_the_admin_allowed() {
    let creds = secret(&[("username", "u"), ("password", "p")]);
    let w = resolve(&mysql("mysql_fdw", &[("host", "m")]), "shop", Some(&creds), &mysql_allowed()).unwrap();
    assert_eq!(w.label, "fdw/mysql_fdw");
    let keys: Vec<_> = w.mapping_options.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["password", "username"]);

    // Nothing is allowed by default; dblink never is unless listed.
    assert!(invalid(resolve(&mysql("mysql_fdw", &[]), "shop", Some(&creds), &open())).contains("not allowed"));
    assert!(invalid(resolve(&mysql("dblink", &[]), "shop", Some(&creds), &mysql_allowed())).contains("not allowed"));
    assert!(
        invalid(resolve(&mysql("mysql_fdw", &[("init_command", "x")]), "shop", Some(&creds), &mysql_allowed())).contains("init_command")
    );
    assert!(
        invalid(resolve(&mysql("mysql_fdw", &[("host", "/tmp/mysql.sock")]), "shop", Some(&creds), &mysql_allowed())).contains("network")
    );
    let extra = secret(&[("username", "u"), ("ssl_key", "/etc/key")]);
    assert!(invalid(resolve(&mysql("mysql_fdw", &[]), "shop", Some(&extra), &mysql_allowed())).contains("ssl_key"));
}

/// The admin names which server options carry the host; each one set
/// is fenced, and with a fence one must be set.
#[test]
fn the_fence_holds_on_every_option_that_names_the_host() {
    let creds = secret(&[("username", "u"), ("password", "p")]);
    let tds = |hosts: Vec<String>| SourcePolicy {
        wrappers: vec![AllowedWrapper {
            extension: "tds_fdw".into(),
            wrapper: "mysql_fdw".into(),
            server_options: vec!["servername".into(), "host".into(), "port".into()],
            user_mapping_options: vec!["username".into(), "password".into()],
            host_options: hosts,
        }],
        hosts: HostFence::parse(&["10.0.0.0/8".into()]).unwrap(),
        ..Default::default()
    };
    let named = tds(vec!["servername".into()]);
    assert!(resolve(&mysql("tds_fdw", &[("servername", "10.1.2.3")]), "shop", Some(&creds), &named).is_ok());
    assert!(invalid(resolve(&mysql("tds_fdw", &[("servername", "192.168.1.1")]), "shop", Some(&creds), &named)).contains("outside"));
    assert!(invalid(resolve(&mysql("tds_fdw", &[("servername", "/var/run/x")]), "shop", Some(&creds), &named)).contains("network"));
    // No host at all, with a fence: nothing to check, so refused.
    assert!(invalid(resolve(&mysql("tds_fdw", &[("port", "1433")]), "shop", Some(&creds), &named)).contains("must set the source's host"));
    // Only `servername` carries the host here; `host` is another option.
    assert!(invalid(resolve(&mysql("tds_fdw", &[("host", "10.1.2.3")]), "shop", Some(&creds), &named)).contains("servername"));
    // An admin who named none: with a fence, nothing can be attached.
    assert!(
        invalid(resolve(&mysql("tds_fdw", &[("servername", "10.1.2.3")]), "shop", Some(&creds), &tds(Vec::new())))
            .contains("named no host option")
    );
    // Without a fence, a host is still a network endpoint, and may be absent.
    let open = SourcePolicy { hosts: HostFence::default(), ..named.clone() };
    assert!(resolve(&mysql("tds_fdw", &[("port", "1433")]), "shop", Some(&creds), &open).is_ok());
    assert!(invalid(resolve(&mysql("tds_fdw", &[("servername", "/var/run/x")]), "shop", Some(&creds), &open)).contains("network"));
    // Unset in the admin's JSON: `host`, as before.
    let parsed: AllowedWrapper =
        serde_json::from_str(r#"{"extension":"mysql_fdw","wrapper":"mysql_fdw","serverOptions":["host"]}"#).unwrap();
    assert_eq!(parsed.host_options, ["host"]);
}

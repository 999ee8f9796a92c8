use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::file::plugin_name;
use super::*;
use crate::api::{Connection, WorkspaceConnection};
use crate::plugins::hcl_string;

const AWS: &str = include_str!("../../../tests/fixtures/spc/aws.spc");
const GCP: &str = include_str!("../../../tests/fixtures/spc/gcp.spc");
const GITHUB: &str = include_str!("../../../tests/fixtures/spc/github.spc");
const POSTGRES: &str = include_str!("../../../tests/fixtures/spc/postgres.spc");
const PLUGINS: &str = include_str!("../../../tests/fixtures/spc/plugins.spc");

fn run_import(files: &[(&str, &str)], options: &Options) -> Result<Import, ImportError> {
    let sources: Vec<Source> = files.iter().map(|(path, text)| Source { path, text }).collect();
    steampipe(&sources, options)
}

fn ok(files: &[(&str, &str)]) -> Import {
    run_import(files, &Options::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn error(files: &[(&str, &str)]) -> ImportError {
    run_import(files, &Options::default()).expect_err("an error")
}

fn all() -> Vec<(&'static str, &'static str)> {
    vec![("aws.spc", AWS), ("gcp.spc", GCP), ("github.spc", GITHUB), ("postgres.spc", POSTGRES), ("plugins.spc", PLUGINS)]
}

fn object<'i>(import: &'i Import, kind: &str, name: &str) -> &'i Value {
    import
        .objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", import.objects))
}

fn names(import: &Import, kind: &str) -> Vec<String> {
    import.objects.iter().filter(|o| o["kind"] == kind).map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect()
}

fn config<'i>(import: &'i Import, name: &str) -> &'i str {
    object(import, "Connection", name)["spec"]["plugin"]["steampipe"]["config"].as_str().unwrap_or_default()
}

fn secret<'i>(import: &'i Import, name: &str) -> BTreeMap<&'i str, &'i str> {
    let data = object(import, "Secret", name)["stringData"].as_object().unwrap();
    data.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect()
}

fn noted(import: &Import, file: &str, line: usize, part: &str) -> bool {
    import.notes.iter().any(|n| n.location == Location { file: file.into(), line } && n.message.contains(part))
}

/// Every object is one the apiserver's types take, and no credential
/// value shows in a Connection or attachment, in any form.
fn assert_sound(import: &Import) {
    let credentials: Vec<&str> = import
        .objects
        .iter()
        .filter(|o| o["kind"] == "Secret")
        .flat_map(|o| o["stringData"].as_object().unwrap().values().map(|v| v.as_str().unwrap()))
        .collect();
    for object in import.objects.iter().filter(|o| o["kind"] != "Secret") {
        match object["kind"].as_str().unwrap() {
            "Connection" => drop(serde_json::from_value::<Connection>(object.clone()).unwrap()),
            "WorkspaceConnection" => drop(serde_json::from_value::<WorkspaceConnection>(object.clone()).unwrap()),
            other => panic!("unexpected kind {other}"),
        }
        let text = serde_json::to_string(object).unwrap();
        for value in &credentials {
            let json = serde_json::to_string(value).unwrap();
            let hcl = hcl_string(value);
            for form in [*value, &json[1..json.len() - 1], &hcl[1..hcl.len() - 1]] {
                assert!(!text.contains(form), "{form:?} shows in {text}");
            }
        }
    }
}

#[test]
fn aws_accounts_become_connections_with_secrets() {
    let import = ok(&[("aws.spc", AWS)]);
    assert_sound(&import);
    let kinds: Vec<&str> = import.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Secret", "Secret", "Connection", "Connection", "Connection", "Connection"]);
    assert_eq!(names(&import, "Connection"), ["aws-prod-01", "aws-prod-02", "aws-dev", "all-aws"], "the commented-out one is not there");
    assert_eq!(names(&import, "Secret"), ["aws-prod-01-credentials", "aws-prod-02-credentials"]);

    assert_eq!(
        secret(&import, "aws-prod-01-credentials"),
        BTreeMap::from([("access_key", "AKIAPROD01EXAMPLE"), ("secret_key", "prod01/Secret+Key/wJalrXUtnFEMI")])
    );
    // The Secret holds the value, not the way it was written.
    assert_eq!(secret(&import, "aws-prod-02-credentials")["secret_key"], "prod02-s3cr3t-\"quoted\"-${not_a_var}");
    let secret_labels = &object(&import, "Secret", "aws-prod-01-credentials")["metadata"]["labels"];
    assert_eq!(secret_labels, &json!({ "manifold.dev/credentials": "true" }));

    let prod = object(&import, "Connection", "aws-prod-01");
    assert_eq!(
        prod["spec"],
        json!({
            "schema": "aws_prod_01",
            "plugin": { "steampipe": { "name": "aws", "config": "regions = [\"us-east-1\", \"eu-west-1\"]\n" } },
            "credentials": { "secretRef": { "name": "aws-prod-01-credentials" } },
        })
    );
    assert_eq!(prod["apiVersion"], "manifold.dev/v1alpha1");
    assert!(prod["metadata"].get("namespace").is_none());
    // The user's expressions, comments inside them included.
    assert_eq!(
        config(&import, "aws-prod-02"),
        "regions = [\n    \"us-east-1\", # primary\n    \"us-west-2\",\n  ]\nignore_error_codes = [\"AccessDenied\", \"UnauthorizedOperation\"]\nmax_error_retry_attempts = 9\n"
    );
    assert_eq!(object(&import, "Connection", "aws-prod-02")["spec"]["plugin"]["steampipe"]["name"], "aws");

    let dev = object(&import, "Connection", "aws-dev");
    assert_eq!(config(&import, "aws-dev"), "profile = \"dev\"\nregions = [\"*\"]\n");
    assert!(dev["spec"].get("credentials").is_none());
    assert!(noted(&import, "aws.spc", 33, "profile"));
    assert!(noted(&import, "aws.spc", 35, "import_schema"));
    assert!(noted(&import, "aws.spc", 36, "options block left out"));

    assert_eq!(
        object(&import, "Connection", "all-aws")["spec"],
        json!({ "schema": "all_aws", "aggregator": { "connections": ["aws-*"] } })
    );

    let renamed: Vec<String> = import.renamed.iter().map(ToString::to_string).collect();
    assert_eq!(renamed[0], "aws.spc:4: aws_prod_01 is Connection aws-prod-01, schema aws_prod_01");
    assert_eq!(renamed.len(), 4);
}

#[test]
fn gcp_credentials_are_secret_as_json_and_a_setting_as_a_path() {
    let import = ok(&[("gcp.spc", GCP)]);
    assert_sound(&import);
    assert_eq!(
        config(&import, "gcp-analytics"),
        "project = \"acme-analytics\"\ncredentials = \"/home/me/.config/gcloud/analytics-sa.json\"\n"
    );
    assert!(noted(&import, "gcp.spc", 4, "credentials names a file"));
    let json = secret(&import, "gcp-billing-credentials")["credentials"];
    let parsed: Value = serde_json::from_str(json).unwrap();
    assert_eq!(parsed["private_key"], "-----BEGIN PRIVATE KEY-----\nMIIEbilling\n-----END PRIVATE KEY-----\n");
    assert!(json.starts_with("{\n  \"type\""), "the heredoc's indentation is stripped: {json:?}");
    assert_eq!(config(&import, "gcp-billing"), "project = \"acme-billing\"\nignore_error_codes = [\"401\", \"403\"]\n");
    // "*" would take every connection of the namespace, of any plugin.
    assert_eq!(object(&import, "Connection", "gcp-all")["spec"]["aggregator"]["connections"], json!(["gcp-analytics", "gcp-billing"]));
    assert!(noted(&import, "gcp.spc", 25, "any plugin"));
}

#[test]
fn plugin_names_come_from_image_references() {
    let import = ok(&[("github.spc", GITHUB)]);
    assert_sound(&import);
    assert_eq!(object(&import, "Connection", "github")["spec"]["plugin"], json!({ "steampipe": { "name": "github" } }));
    assert_eq!(secret(&import, "github-credentials"), BTreeMap::from([("token", "ghp_exampleTokenFor1234567890abcdEFGH")]));
    assert_eq!(object(&import, "Connection", "gitlab-ops")["spec"]["plugin"]["steampipe"]["name"], "gitlab");
    assert_eq!(config(&import, "gitlab-ops"), "baseurl = \"https://gitlab.example.com\"\n");
    for (image, name) in
        [("aws", "aws"), ("turbot/aws", "aws"), ("aws@0.118", "aws"), ("hub.steampipe.io/plugins/turbot/aws@latest", "aws")]
    {
        assert_eq!(plugin_name(image).as_deref(), Ok(name), "{image}");
    }
    for bad in ["", "turbot/", "Turbot/AWS", "org/my-plugin@1"] {
        assert!(plugin_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn postgres_sources_become_postgres_connections() {
    let import = ok(&[("postgres.spc", POSTGRES)]);
    assert_sound(&import);
    assert_eq!(
        object(&import, "Connection", "shop-replica")["spec"],
        json!({
            "schema": "shop_replica",
            "plugin": { "postgres": {
                "host": "replica.db.example.com", "port": 6432, "database": "shop", "remoteSchema": "sales",
                "options": { "sslmode": "require" },
            } },
            "credentials": { "secretRef": { "name": "shop-replica-credentials" } },
        })
    );
    assert_eq!(secret(&import, "shop-replica-credentials"), BTreeMap::from([("user", "reporter"), ("password", "p@ss:word")]));
    assert_eq!(
        object(&import, "Connection", "warehouse")["spec"]["plugin"],
        json!({ "postgres": { "host": "10.20.0.15", "port": 5433, "database": "warehouse", "remoteSchema": "public", "options": { "fetch_size": "1000" } } })
    );
    assert_eq!(secret(&import, "warehouse-credentials"), BTreeMap::from([("user", "warehouse_ro"), ("password", "wh-pass-123")]));

    let refused = |body: &str| error(&[("pg.spc", &format!("connection \"pg\" {{\n  plugin = \"postgres\"\n{body}\n}}\n"))]).to_string();
    assert!(refused("  host = \"/var/run/postgresql\"\n  database = \"d\"\n  user = \"u\"\n  password = \"p\"").contains("DNS name"));
    let message = refused("  connection_string = \"postgres://u:hunter2@db/d?sslrootcert=/etc/x\"");
    assert!(message.starts_with("pg.spc:3: connection pg: in connection_string: sslrootcert is not"), "{message}");
    assert!(!message.contains("hunter2"));
    assert!(refused("  host = \"db\"\n  database = \"d\"\n  user = \"u\"").contains("needs a password"));
    assert!(refused("  host = \"db\"\n  database = \"d\"\n  user = \"u\"\n  password = \"p\"\n  port = 70000").contains("port"));
    assert!(refused("  connection_string = \"mysql://u:p@db/d\"").contains("postgres://"));
    // Without connection_string or host it is not clearly Postgres: a
    // Steampipe plugin of that name.
    let other = ok(&[("pg.spc", "connection \"pg\" {\n  plugin = \"postgres\"\n  tables = [\"a\"]\n}\n")]);
    assert_eq!(
        object(&other, "Connection", "pg")["spec"]["plugin"],
        json!({ "steampipe": { "name": "postgres", "config": "tables = [\"a\"]\n" } })
    );
}

#[test]
fn plugin_blocks_resolve_references() {
    let import = ok(&[("plugins.spc", PLUGINS)]);
    assert_sound(&import);
    let lake = object(&import, "Connection", "aws-data-lake");
    assert_eq!(lake["spec"]["plugin"]["steampipe"]["name"], "aws");
    assert_eq!(config(&import, "aws-data-lake"), "regions = [\"us-east-1\"]\nendpoint_url = \"https://s3.internal.example.com\"\n");
    assert_eq!(
        secret(&import, "aws-data-lake-credentials"),
        BTreeMap::from([("access_key", "AKIALAKEEXAMPLE"), ("secret_key", "lake-secret")])
    );
    // A plugin block without a source is the plugin of its label.
    assert_eq!(object(&import, "Connection", "slack-workspace")["spec"]["plugin"]["steampipe"]["name"], "slack");
    assert_eq!(secret(&import, "slack-workspace-credentials"), BTreeMap::from([("token", "1234567890")]));
    assert_eq!(
        config(&import, "slack-workspace"),
        "team = { name = \"acme\", channels = [\"general\", \"ops\"] }\nwelcome = <<EOT\nHello ${\"there\"}\nEOT\n"
    );
    assert!(noted(&import, "plugins.spc", 1, "memory_max_mb, limiter block left out"));
    assert!(noted(&import, "plugins.spc", 13, "options \"database\" block left out"));

    // Plugin blocks may be in another file; an unknown one is an error.
    let (blocks, connections) = PLUGINS.split_at(PLUGINS.find("options").unwrap());
    assert!(run_import(&[("a.spc", connections), ("b.spc", blocks)], &Options::default()).is_ok());
    let err = error(&[("a.spc", connections)]);
    assert_eq!(err.location, Some(Location { file: "a.spc".into(), line: 7 }));
    assert!(err.message.contains("no plugin \"aws_high\" block"), "{err}");
    let twice = error(&[("a.spc", blocks), ("b.spc", blocks)]);
    assert_eq!(twice.to_string(), "b.spc:1: plugin \"aws_high\" is defined twice: first at a.spc:1");
}

#[test]
fn options_name_select_and_attach() {
    let options = Options {
        namespace: Some("acme".into()),
        connections: vec!["aws_*".into(), "github".into()],
        prefix: Some("team".into()),
        secret_keys: vec!["baseurl".into()],
        attach: vec!["analytics".into(), "reporting".into()],
    };
    let import = run_import(&all(), &options).unwrap();
    assert_sound(&import);
    assert_eq!(names(&import, "Connection"), ["team-aws-prod-01", "team-aws-prod-02", "team-aws-dev", "team-github", "team-aws-data-lake"]);
    assert_eq!(object(&import, "Connection", "team-aws-dev")["spec"]["schema"], "team_aws_dev");
    assert_eq!(names(&import, "WorkspaceConnection").len(), 10);
    let attachment = object(&import, "WorkspaceConnection", "analytics-team-github");
    assert_eq!(attachment["spec"], json!({ "workspace": "analytics", "connection": "team-github" }));
    assert!(import.objects.iter().all(|o| o["metadata"]["namespace"] == "acme"));
    let kinds: Vec<&str> = import.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    let mut sorted = kinds.clone();
    sorted.sort_by_key(|k| ["Secret", "Connection", "WorkspaceConnection"].iter().position(|x| x == k));
    assert_eq!(kinds, sorted, "Secrets, then Connections, then attachments");

    // An aggregator picked alone keeps its glob, prefixed, over every
    // connection of its plugin.
    let alone = import_with(&all(), &["all_aws"], Some("team"));
    assert_eq!(names(&alone, "Connection"), ["team-all-aws"]);
    assert_eq!(object(&alone, "Connection", "team-all-aws")["spec"]["aggregator"]["connections"], json!(["team-aws-*"]));

    // --secret-key takes any argument into the Secret.
    let gitlab = run_import(&[("github.spc", GITHUB)], &Options { secret_keys: vec!["baseurl".into()], ..Default::default() }).unwrap();
    assert_eq!(secret(&gitlab, "gitlab-ops-credentials")["baseurl"], "https://gitlab.example.com");
    assert!(gitlab.objects.iter().all(|o| o["spec"]["plugin"]["steampipe"].get("config").is_none()));

    let none = import_options(&all(), &Options { connections: vec!["azure_*".into()], ..Default::default() }).unwrap_err();
    assert_eq!(none.location, None);
    assert!(none.message.contains("azure_*"));
}

fn import_options(files: &[(&str, &str)], options: &Options) -> Result<Import, ImportError> {
    run_import(files, options)
}

fn import_with(files: &[(&str, &str)], connections: &[&str], prefix: Option<&str>) -> Import {
    let options =
        Options { connections: connections.iter().map(|c| c.to_string()).collect(), prefix: prefix.map(Into::into), ..Default::default() };
    run_import(files, &options).unwrap()
}

#[test]
fn every_fixture_together() {
    let import = ok(&all());
    assert_sound(&import);
    assert_eq!(names(&import, "Connection").len(), 13);
    // The glob over aws_* now also takes the data lake, of plugin aws by its block.
    assert_eq!(object(&import, "Connection", "all-aws")["spec"]["aggregator"]["connections"], json!(["aws-*"]));
    let yaml = super::super::to_yaml(&import.objects);
    let back: Vec<Value> = yaml.split("\n---\n").map(|doc| serde_saphyr::from_str(doc.trim_start_matches("---\n")).unwrap()).collect();
    assert_eq!(back, import.objects);
}

#[test]
fn globs_that_would_take_more_become_lists() {
    let text = "connection \"aws_a\" {\n  plugin = \"aws\"\n}\nconnection \"aws.b\" {\n  plugin = \"aws\"\n}\nconnection \"aws_c\" {\n  plugin = \"gcp\"\n}\nconnection \"all\" {\n  plugin = \"aws\"\n  type = \"aggregator\"\n  connections = [\"aws_*\", \"aws_a\", \"azure_*\"]\n}\n";
    let import = ok(&[("x.spc", text)]);
    // aws-* would take aws.b (not aws_*) and aws_c (a gcp connection).
    assert_eq!(object(&import, "Connection", "all")["spec"]["aggregator"]["connections"], json!(["aws-a", "azure-*"]));
    assert!(noted(&import, "x.spc", 13, "matches no aws connection"));
}

#[test]
fn errors_name_the_file_and_line() {
    let env = error(&[("errors/env.spc", include_str!("../../../tests/fixtures/spc/errors/env.spc"))]);
    assert_eq!(env.location, Some(Location { file: "errors/env.spc".into(), line: 4 }));
    assert!(env.message.contains("secret_key calls env()") && env.message.contains("--secret-key"), "{env}");

    let duplicate = error(&[
        ("errors/duplicate_a.spc", include_str!("../../../tests/fixtures/spc/errors/duplicate_a.spc")),
        ("errors/duplicate_b.spc", include_str!("../../../tests/fixtures/spc/errors/duplicate_b.spc")),
    ]);
    assert_eq!(duplicate.to_string(), "errors/duplicate_b.spc:3: connection aws_prod is defined twice: first at errors/duplicate_a.spc:1");

    let unknown = error(&[("errors/unknown_block.spc", include_str!("../../../tests/fixtures/spc/errors/unknown_block.spc"))]);
    assert_eq!(unknown.location, Some(Location { file: "errors/unknown_block.spc".into(), line: 5 }));
    assert!(unknown.message.starts_with("dashboard block"), "{unknown}");

    let collide = error(&[
        ("a.spc", "connection \"aws.prod\" {\n  plugin = \"aws\"\n}\n"),
        ("b.spc", "\nconnection \"aws_prod\" {\n  plugin = \"aws\"\n}\n"),
    ]);
    assert_eq!(
        collide.to_string(),
        "b.spc:2: connections aws.prod (at a.spc:1) and aws_prod both have the Kubernetes name aws-prod: rename one"
    );

    let cases: &[(&str, usize, &str)] = &[
        ("connection \"a\" {\n  plugin = \"aws\"\n  regions = \n}\n", 3, "not valid HCL"),
        ("connection \"a\" {\n  plugin = \"aws\"\n  secret_key = \"x-${var.k}\"\n}\n", 3, "refers to var"),
        ("connection \"a\" {\n  plugin = \"aws\"\n  secret_key = [\"x\"]\n}\n", 3, "plain string or number"),
        ("connection \"a\" {\n  plugin = \"aws\"\n  secret_key = \"x-${\"y\"}\"\n}\n", 3, "plain string or number"),
        ("connection \"a\" {\n  plugin = \"aws\"\n  regions = [upper(\"x\")]\n}\n", 3, "calls upper()"),
        ("connection \"a\" {\n  plugin = \"aws\"\n  regions = [for r in [\"a\"] : r]\n}\n", 3, "for expressions"),
        ("connection \"a\" {\n  regions = []\n}\n", 1, "has no plugin"),
        ("connection \"a\" {\n  plugin = aws\n}\n", 2, "plugin is a string or plugin.<label>"),
        ("connection \"a\" {\n  plugin = \"aws\"\n  type = \"plugin\"\n}\n", 3, "only type"),
        ("connection \"a\" {\n  plugin = \"aws\"\n  import_schema = \"off\"\n}\n", 3, "import_schema"),
        ("connection \"a\" {\n  plugin = \"aws\"\n  type = \"aggregator\"\n}\n", 1, "needs connections"),
        ("connection \"a\" {\n  plugin = \"aws\"\n\n  limiter \"x\" {\n  }\n}\n", 4, "limiter block"),
        ("connection {\n  plugin = \"aws\"\n}\n", 1, "one label"),
        ("\n\nregions = [\"*\"]\n", 3, "outside a block"),
        ("workspace \"default\" {\n}\n", 1, "workspaces.spc"),
    ];
    for (text, line, part) in cases {
        let err = error(&[("t.spc", text)]);
        assert_eq!(err.location, Some(Location { file: "t.spc".into(), line: *line }), "{text}: {err}");
        assert!(err.message.contains(part), "{text}: {err}");
        assert!(!err.message.contains("x-"), "no value in {err}");
    }
}

//! `get` (or `status`): a connection with its workspaces, test result,
//! source schema and conditions; a workspace with its connections, readers,
//! search path and aggregators; lists of each kind. `-o yaml|json` prints
//! the objects, `-w` follows them.

use std::fmt::Write as _;

use clap::Args;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use manifold::api::{Connection, Workspace, WorkspaceConnection, conditions};

use super::{KubeFlags, Output, Result};

#[derive(Args, Debug)]
pub struct GetArgs {
    /// `connection` (`conn`), `workspace` (`mws`) or `attachment`
    /// (`wsconn`); plural forms too.
    pub kind: String,
    /// One object's name; without it, a list.
    pub name: Option<String>,
    /// Print the objects as YAML or JSON.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// Keep watching and print every change.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Connection,
    Workspace,
    Attachment,
}

pub fn kind(word: &str) -> Result<Kind> {
    Ok(match word.to_lowercase().as_str() {
        "connection" | "connections" | "conn" | "conns" | "connection.manifold.dev" | "connections.manifold.dev" => Kind::Connection,
        "workspace" | "workspaces" | "mws" | "workspace.manifold.dev" | "workspaces.manifold.dev" => Kind::Workspace,
        "attachment" | "attachments" | "workspaceconnection" | "workspaceconnections" | "wsconn" | "workspaceconnections.manifold.dev" => {
            Kind::Attachment
        }
        other => return Err(format!("unknown kind {other:?}: use connection, workspace or attachment").into()),
    })
}

pub async fn run(flags: &KubeFlags, args: GetArgs) -> Result<()> {
    let kind = kind(&args.kind)?;
    let (client, ns) = flags.client().await?;
    let view = View { client: client.clone(), ns: ns.clone() };
    if !args.watch {
        return view.print(kind, args.name.as_deref(), args.output).await;
    }
    // Follow: one stream of the kind, narrowed to the name if given; each
    // change prints the object again (or its row).
    let config = match &args.name {
        Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        None => watcher::Config::default(),
    };
    let mut changes = match kind {
        Kind::Connection => names(watcher(Api::<Connection>::namespaced(client, &ns), config)),
        Kind::Workspace => names(watcher(Api::<Workspace>::namespaced(client, &ns), config)),
        Kind::Attachment => names(watcher(Api::<WorkspaceConnection>::namespaced(client, &ns), config)),
    };
    let mut listed = false;
    while let Some(change) = changes.next().await {
        match change {
            Change::Ready if !listed => {
                listed = true;
                view.print(kind, args.name.as_deref(), args.output).await?;
            }
            Change::Ready => {}
            Change::Applied(name) if listed => match (&args.name, args.output) {
                (Some(_), _) | (None, Some(_)) => {
                    println!("---");
                    view.print(kind, Some(&name), args.output).await?;
                }
                (None, None) => print!("{}", view.rows(kind, Some(&name), false).await?),
            },
            Change::Deleted(name) if listed => println!("{name} deleted"),
            Change::Applied(_) | Change::Deleted(_) => {}
            Change::Error(e) => eprintln!("watch: {e}"),
        }
    }
    Ok(())
}

enum Change {
    Ready,
    Applied(String),
    Deleted(String),
    Error(String),
}

fn names<K: kube::Resource + Send + 'static>(
    stream: impl futures::Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> futures::stream::BoxStream<'static, Change> {
    stream
        .filter_map(|event| async move {
            match event {
                Ok(watcher::Event::InitDone) => Some(Change::Ready),
                Ok(watcher::Event::Apply(o)) => Some(Change::Applied(o.name_any())),
                Ok(watcher::Event::Delete(o)) => Some(Change::Deleted(o.name_any())),
                Ok(_) => None,
                Err(e) => Some(Change::Error(e.to_string())),
            }
        })
        .boxed()
}

struct View {
    client: Client,
    ns: String,
}

impl View {
    async fn print(&self, kind: Kind, name: Option<&str>, output: Option<Output>) -> Result<()> {
        if let Some(output) = output {
            let objects = self.objects(kind, name).await?;
            return super::print_objects(&objects, Some(output), "", "");
        }
        match (kind, name) {
            (Kind::Connection, Some(name)) => print!("{}", self.connection(name).await?),
            (Kind::Workspace, Some(name)) => print!("{}", self.workspace(name).await?),
            _ => print!("{}", self.rows(kind, name, true).await?),
        }
        Ok(())
    }

    async fn objects(&self, kind: Kind, name: Option<&str>) -> Result<Vec<serde_json::Value>> {
        async fn fetch<K>(api: Api<K>, name: Option<&str>) -> Result<Vec<serde_json::Value>>
        where
            K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
        {
            let items = match name {
                Some(name) => vec![api.get(name).await.map_err(super::explain)?],
                None => api.list(&ListParams::default()).await.map_err(super::explain)?.items,
            };
            let mut out = Vec::new();
            for item in items {
                let mut value = super::apply::without_managed_fields(serde_json::to_value(item)?);
                value["apiVersion"] = serde_json::json!(K::api_version(&()));
                value["kind"] = serde_json::json!(K::kind(&()));
                out.push(value);
            }
            Ok(out)
        }
        match kind {
            Kind::Connection => fetch(self.api::<Connection>(), name).await,
            Kind::Workspace => fetch(self.api::<Workspace>(), name).await,
            Kind::Attachment => fetch(self.api::<WorkspaceConnection>(), name).await,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn rows(&self, kind: Kind, name: Option<&str>, header: bool) -> Result<String> {
        let now = jiff::Timestamp::now();
        let (head, rows): (&[&str], Vec<Vec<String>>) = match kind {
            Kind::Connection => {
                let items = list_or_one(self.api::<Connection>(), name).await?;
                (
                    &["NAME", "PLUGIN", "SCHEMA", "READY", "TEST", "TESTED", "WORKSPACES", "AGE"],
                    items.iter().map(|c| connection_row(c, now)).collect(),
                )
            }
            Kind::Workspace => {
                let items = list_or_one(self.api::<Workspace>(), name).await?;
                (&["NAME", "DATABASE", "READY", "CONNECTIONS", "SEARCH PATH", "AGE"], items.iter().map(|w| workspace_row(w, now)).collect())
            }
            Kind::Attachment => {
                let items = list_or_one(self.api::<WorkspaceConnection>(), name).await?;
                (
                    &["NAME", "WORKSPACE", "CONNECTION", "SCHEMA", "TABLES", "READY", "AGE"],
                    items.iter().map(|a| attachment_row(a, now)).collect(),
                )
            }
        };
        if rows.is_empty() && header {
            return Ok(format!("No resources found in {} namespace.\n", self.ns));
        }
        Ok(table(if header { Some(head) } else { None }, &rows))
    }

    async fn connection(&self, name: &str) -> Result<String> {
        let connection = self.api::<Connection>().get(name).await.map_err(super::explain)?;
        let attachments = super::attach::attachments_of(&self.client, &self.ns, name, &[]).await?;
        Ok(describe_connection(&connection, &attachments, jiff::Timestamp::now()))
    }

    async fn workspace(&self, name: &str) -> Result<String> {
        let workspace = self.api::<Workspace>().get(name).await.map_err(super::explain)?;
        let connections = self.api::<Connection>().list(&ListParams::default()).await.map_err(super::explain)?.items;
        Ok(describe_workspace(&workspace, &connections, jiff::Timestamp::now()))
    }
}

async fn list_or_one<K>(api: Api<K>, name: Option<&str>) -> Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(match name {
        Some(name) => vec![api.get(name).await.map_err(super::explain)?],
        None => api.list(&ListParams::default()).await.map_err(super::explain)?.items,
    })
}

fn ready(conditions: &[Condition]) -> String {
    match conditions::find(conditions, conditions::READY) {
        Some(c) if c.status == "True" => "True".into(),
        Some(c) => format!("{} ({})", c.status, c.reason),
        None => "Unknown".into(),
    }
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl prints an age.
pub fn age(time: Option<&Time>, now: jiff::Timestamp) -> String {
    let Some(time) = time else { return "<unknown>".into() };
    let secs = (now.as_second() - time.0.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn connection_row(c: &Connection, now: jiff::Timestamp) -> Vec<String> {
    let status = c.status.clone().unwrap_or_default();
    vec![
        c.name_any(),
        status.plugin.unwrap_or_else(|| if c.spec.aggregator.is_some() { "aggregator".into() } else { String::new() }),
        status.schema.unwrap_or_default(),
        ready(&status.conditions),
        status.test.as_ref().map(|t| format!("{:?}", t.result)).unwrap_or_default(),
        status.test.as_ref().map(|t| age(Some(&t.tested_at), now) + " ago").unwrap_or_default(),
        status.workspace_count.to_string(),
        age(c.metadata.creation_timestamp.as_ref(), now),
    ]
}

fn workspace_row(w: &Workspace, now: jiff::Timestamp) -> Vec<String> {
    let status = w.status.clone().unwrap_or_default();
    vec![
        w.name_any(),
        status.database.unwrap_or_default(),
        ready(&status.conditions),
        status.connection_count.to_string(),
        status.search_path.unwrap_or_default(),
        age(w.metadata.creation_timestamp.as_ref(), now),
    ]
}

fn attachment_row(a: &WorkspaceConnection, now: jiff::Timestamp) -> Vec<String> {
    let status = a.status.clone().unwrap_or_default();
    vec![
        a.name_any(),
        a.spec.workspace.clone(),
        a.spec.connection.clone(),
        status.schema.unwrap_or_default(),
        status.tables.map(|t| t.to_string()).unwrap_or_default(),
        if a.metadata.deletion_timestamp.is_some() { "Deleting".into() } else { ready(&status.conditions) },
        age(a.metadata.creation_timestamp.as_ref(), now),
    ]
}

/// Columns padded to the widest cell, two spaces apart, as kubectl prints.
pub fn table(head: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.map(|h| h.iter().map(|c| c.len()).collect()).unwrap_or_default();
    for row in rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    if let Some(head) = head {
        line(head.to_vec());
    }
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn conditions_block(out: &mut String, list: &[Condition]) {
    if list.is_empty() {
        return;
    }
    out.push_str("Conditions:\n");
    let rows: Vec<Vec<String>> =
        list.iter().map(|c| vec![c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()]).collect();
    for line in table(Some(&["TYPE", "STATUS", "REASON", "MESSAGE"]), &rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
}

/// A connection as `get connection NAME` shows it.
pub fn describe_connection(c: &Connection, attachments: &[WorkspaceConnection], now: jiff::Timestamp) -> String {
    let status = c.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Connection:  {}/{}", c.namespace().unwrap_or_default(), c.name_any());
    let plugin = status.plugin.clone().unwrap_or_else(|| if c.spec.aggregator.is_some() { "aggregator".into() } else { "-".into() });
    let _ = writeln!(out, "Plugin:      {plugin}");
    let _ = writeln!(out, "Schema:      {}", status.schema.clone().unwrap_or_else(|| "-".into()));
    if let Some(secret) = &c.spec.credentials {
        let _ = writeln!(out, "Credentials: Secret {}", secret.secret_ref.name);
    }
    let _ = writeln!(out, "Ready:       {}", ready(&status.conditions));
    match &status.test {
        Some(t) => {
            let tables = t.tables.map(|n| format!(", {n} tables")).unwrap_or_default();
            let place = t.workspace.as_ref().map(|w| format!(" in workspace {w}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "Test:        {:?} ({}){tables}, {} ms{place}, {} ago",
                t.result,
                t.reason,
                t.duration_ms,
                age(Some(&t.tested_at), now)
            );
            let _ = writeln!(out, "             {}", t.message);
        }
        None => {
            let _ = writeln!(out, "Test:        not tested yet");
        }
    }
    if let Some(source) = &status.source_schema {
        let short = source.hash.get(..12).unwrap_or(&source.hash);
        let _ = writeln!(out, "Source:      {} tables (schema {short}), changed {} ago", source.tables, age(Some(&source.changed_at), now));
    }
    if !status.members.is_empty() {
        out.push_str("Members:\n");
        let rows: Vec<Vec<String>> = status.members.iter().map(|m| vec![m.name.clone(), m.state.clone()]).collect();
        for line in table(Some(&["CONNECTION", "STATE"]), &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if attachments.is_empty() {
        out.push_str("Workspaces:  none\n");
    } else {
        out.push_str("Workspaces:\n");
        let rows: Vec<Vec<String>> = attachments
            .iter()
            .map(|a| attachment_row(a, now))
            .map(|r| vec![r[1].clone(), r[3].clone(), r[4].clone(), r[5].clone(), r[0].clone()])
            .collect();
        for line in table(Some(&["WORKSPACE", "SCHEMA", "TABLES", "READY", "ATTACHMENT"]), &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    conditions_block(&mut out, &status.conditions);
    out
}

/// A workspace as `get workspace NAME` shows it.
pub fn describe_workspace(w: &Workspace, connections: &[Connection], _now: jiff::Timestamp) -> String {
    let status = w.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Workspace:   {}/{}", w.namespace().unwrap_or_default(), w.name_any());
    let _ = writeln!(out, "Database:    {}", status.database.clone().unwrap_or_else(|| "-".into()));
    if let Some(version) = &status.postgres_version {
        let _ = writeln!(out, "Postgres:    {version}");
    }
    let _ = writeln!(out, "Ready:       {}", ready(&status.conditions));
    let _ = writeln!(out, "Search path: {}", status.search_path.clone().unwrap_or_else(|| "-".into()));
    if status.connections.is_empty() {
        out.push_str("Connections: none\n");
    } else {
        out.push_str("Connections:\n");
        let rows: Vec<Vec<String>> =
            status.connections.iter().map(|c| vec![c.name.clone(), c.schema.clone(), c.tables.to_string(), c.state.clone()]).collect();
        for line in table(Some(&["CONNECTION", "SCHEMA", "TABLES", "STATE"]), &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !w.spec.connection_selectors.is_empty() || !status.selected.is_empty() {
        let _ = writeln!(out, "Selected:    {} connections by label", status.selected.len());
        let rows: Vec<Vec<String>> =
            status.selected.iter().map(|c| vec![c.name.clone(), c.attachment.clone(), c.state.clone(), c.message.clone()]).collect();
        for line in table(Some(&["CONNECTION", "ATTACHMENT", "STATE", "MESSAGE"]), &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !status.readers.is_empty() {
        out.push_str("Readers:\n");
        let rows: Vec<Vec<String>> = status.readers.iter().map(|r| vec![r.name.clone(), r.state.clone(), r.message.clone()]).collect();
        for line in table(Some(&["ROLE", "STATE", "MESSAGE"]), &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let attached: Vec<&str> = status.connections.iter().map(|c| c.name.as_str()).collect();
    let aggregators: Vec<&Connection> =
        connections.iter().filter(|c| c.spec.aggregator.is_some() && attached.contains(&c.name_any().as_str())).collect();
    if !aggregators.is_empty() {
        out.push_str("Aggregators:\n");
        for a in aggregators {
            let members = a.status.as_ref().map(|s| s.members.clone()).unwrap_or_default();
            let _ = writeln!(out, "  {} ({} members)", a.name_any(), members.len());
            for m in members {
                let _ = writeln!(out, "    {:<30}  {}", m.name, m.state);
            }
        }
    }
    conditions_block(&mut out, &status.conditions);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_take_kubectls_names() {
        assert_eq!(kind("conn").unwrap(), Kind::Connection);
        assert_eq!(kind("Workspaces").unwrap(), Kind::Workspace);
        assert_eq!(kind("wsconn").unwrap(), Kind::Attachment);
        assert!(kind("pods").is_err());
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = vec![vec!["a".to_string(), "long value".to_string(), "x".to_string()], vec!["bbb".into(), "v".into(), "y".into()]];
        assert_eq!(table(Some(&["N", "V", "Z"]), &rows), "N    V           Z\na    long value  x\nbbb  v           y\n");
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| Time(jiff::Timestamp::from_second(1_000_000 - s).unwrap());
        assert_eq!(age(Some(&at(5)), now), "5s");
        assert_eq!(age(Some(&at(600)), now), "10m");
        assert_eq!(age(Some(&at(10_800)), now), "3h");
        assert_eq!(age(Some(&at(864_000)), now), "10d");
    }
}

//! Request shapes of real KMIP clients against `openkcm dev` (gateway + keysvc, mTLS on
//! loopback): one test per client. Each request is built as an item tree the way that client
//! builds it (protocol version in the header, which fields are present, where attributes
//! sit), written from the client's documented behaviour and the KMIP spec — no client code —
//! and each answer is checked the way that client checks it.
//!
//! Every answer also passes [`exchange`]'s version check: the response header carries the
//! request's version and no tag, enumeration value or attribute name in it is one that
//! version does not define (a KMIP 1.0 client handed a 1.1 attribute such as Fresh fails to
//! parse the answer: Percona Server for MongoDB did, against another server).
//!
//! Krill's RSA flow is not here: it needs asymmetric keys, which the server does not have.

mod dev_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dev_support::DevProcess;
use kmip::client::Client;
use kmip::spec::{
    enum_for_tag, CryptographicAlgorithm, CryptographicUsageMask, KeyFormatType, ObjectType,
    Operation, ResultReason, ResultStatus, State,
};
use kmip::ttlv::Limits;
use kmip::{Item, ProtocolVersion, Tag, Value};

type TlsClient = Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

const TIMEOUT: Duration = Duration::from_secs(15);
const V1_0: ProtocolVersion = ProtocolVersion::V1_0;
const V1_1: ProtocolVersion = ProtocolVersion::V1_1;
const V1_2: ProtocolVersion = ProtocolVersion::V1_2;
const V1_4: ProtocolVersion = ProtocolVersion::V1_4;

/// Secret Data Type values (KMIP 1.0 §9.1.3.2.9).
const SECRET_PASSWORD: u32 = 1;
const SECRET_SEED: u32 = 2;
/// Revocation Reason Code Unspecified (KMIP 1.0 §9.1.3.2.18).
const REVOKE_UNSPECIFIED: u32 = 1;
/// Name Type Uninterpreted Text String (KMIP 1.0 §9.1.3.2.10).
const NAME_TEXT: u32 = 1;
/// Key Compression Type EC Public Key Type Uncompressed (KMIP 1.0 §9.1.3.2.3), the value
/// libkmip puts in a key block when one is set.
const EC_UNCOMPRESSED: u32 = 1;

// ---------------------------------------------------------------------------------------
// The server and connections

struct Dev {
    dev: DevProcess,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn start(who: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("openkcm-shapes-{who}-"))
            .tempdir()
            .expect("temporary directory");
        let dev = DevProcess::start(dir.path());
        Self { dev, _dir: dir }
    }

    async fn connect(&self) -> TlsClient {
        let connector = kmip::client::tls::connector_from_pem_files(
            self.dev.pki("ca.pem"),
            self.dev.pki("tenant-a.pem"),
            self.dev.pki("tenant-a-key.pem"),
        )
        .expect("client connector");
        let mut client = tokio::time::timeout(
            TIMEOUT,
            Client::connect_tls(&self.dev.kmip_addr.to_string(), "localhost", &connector),
        )
        .await
        .expect("connect in time")
        .expect("tenant-a connects");
        client.set_timeout(TIMEOUT);
        client
    }

    fn stop(mut self) {
        let (status, _) = self.dev.terminate();
        assert!(status.success(), "openkcm dev exit after SIGTERM: {status}");
    }
}

/// Bytes that differ from run to run (key material a client would have generated).
fn material(len: usize) -> Vec<u8> {
    let mut x = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A name no other run uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hex(&material(6)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Building requests as item trees

fn version_item(v: ProtocolVersion) -> Item {
    Item::structure(
        Tag::PROTOCOL_VERSION,
        vec![
            Item::integer(Tag::PROTOCOL_VERSION_MAJOR, v.major),
            Item::integer(Tag::PROTOCOL_VERSION_MINOR, v.minor),
        ],
    )
}

/// A request message: `header_fields` go between Protocol Version and Batch Count, in the
/// order given (the caller writes them in the spec's order, as clients do).
fn request(v: ProtocolVersion, header_fields: Vec<Item>, batch: Vec<Item>) -> Item {
    let mut header = vec![version_item(v)];
    header.extend(header_fields);
    header.push(Item::integer(Tag::BATCH_COUNT, batch.len() as i32));
    let mut message = vec![Item::structure(Tag::REQUEST_HEADER, header)];
    message.extend(batch);
    Item::structure(Tag::REQUEST_MESSAGE, message)
}

fn op(operation: Operation, payload: Vec<Item>) -> Item {
    Item::structure(
        Tag::BATCH_ITEM,
        vec![
            Item::enumeration(Tag::OPERATION, operation.value()),
            Item::structure(Tag::REQUEST_PAYLOAD, payload),
        ],
    )
}

fn uid(id: &str) -> Item {
    Item::text(Tag::UNIQUE_IDENTIFIER, id)
}

/// A 1.x `Attribute { Attribute Name, Attribute Value }`.
fn attr(name: &str, value: Value) -> Item {
    Item::structure(
        Tag::ATTRIBUTE,
        vec![
            Item::text(Tag::ATTRIBUTE_NAME, name),
            Item::new(Tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

fn template(attributes: Vec<Item>) -> Item {
    Item::structure(Tag::TEMPLATE_ATTRIBUTE, attributes)
}

fn name_value(name: &str) -> Value {
    Value::Structure(vec![
        Item::text(Tag::NAME_VALUE, name),
        Item::enumeration(Tag::NAME_TYPE, NAME_TEXT),
    ])
}

fn object_type(t: ObjectType) -> Item {
    Item::enumeration(Tag::OBJECT_TYPE, t.value())
}

fn aes_attributes(bits: i32) -> Vec<Item> {
    vec![
        attr(
            "Cryptographic Algorithm",
            Value::Enumeration(CryptographicAlgorithm::Aes.value()),
        ),
        attr("Cryptographic Length", Value::Integer(bits)),
        attr(
            "Cryptographic Usage Mask",
            Value::Integer(
                (CryptographicUsageMask::ENCRYPT | CryptographicUsageMask::DECRYPT).0 as i32,
            ),
        ),
    ]
}

/// `Key Block { Key Format Type Raw, Key Compression Type?, Key Value { Key Material },
/// Cryptographic Algorithm?, Cryptographic Length? }`.
fn raw_key_block(bytes: &[u8], aes_bits: Option<i32>, compression: Option<u32>) -> Item {
    let mut block = vec![Item::enumeration(
        Tag::KEY_FORMAT_TYPE,
        KeyFormatType::Raw.value(),
    )];
    block.extend(compression.map(|c| Item::enumeration(Tag::KEY_COMPRESSION_TYPE, c)));
    block.push(Item::structure(
        Tag::KEY_VALUE,
        vec![Item::bytes(Tag::KEY_MATERIAL, bytes.to_vec())],
    ));
    if let Some(bits) = aes_bits {
        block.push(Item::enumeration(
            Tag::CRYPTOGRAPHIC_ALGORITHM,
            CryptographicAlgorithm::Aes.value(),
        ));
        block.push(Item::integer(Tag::CRYPTOGRAPHIC_LENGTH, bits));
    }
    Item::structure(Tag::KEY_BLOCK, block)
}

fn create_aes(bits: i32, more: Vec<Item>) -> Item {
    let mut attributes = aes_attributes(bits);
    attributes.extend(more);
    op(
        Operation::Create,
        vec![object_type(ObjectType::SymmetricKey), template(attributes)],
    )
}

fn register_aes(bytes: &[u8], more: Vec<Item>, compression: Option<u32>) -> Item {
    let bits = bytes.len() as i32 * 8;
    let mut attributes = aes_attributes(bits);
    attributes.extend(more);
    op(
        Operation::Register,
        vec![
            object_type(ObjectType::SymmetricKey),
            template(attributes),
            Item::structure(
                Tag::SYMMETRIC_KEY,
                vec![raw_key_block(bytes, Some(bits), compression)],
            ),
        ],
    )
}

fn register_secret(secret_type: u32, bytes: &[u8], attributes: Vec<Item>) -> Item {
    op(
        Operation::Register,
        vec![
            object_type(ObjectType::SecretData),
            template(attributes),
            Item::structure(
                Tag::SECRET_DATA,
                vec![
                    Item::enumeration(Tag::SECRET_DATA_TYPE, secret_type),
                    raw_key_block(bytes, None, None),
                ],
            ),
        ],
    )
}

fn get_attributes(id: &str, names: &[&str]) -> Item {
    let mut payload = vec![uid(id)];
    payload.extend(names.iter().map(|n| Item::text(Tag::ATTRIBUTE_NAME, *n)));
    op(Operation::GetAttributes, payload)
}

// ---------------------------------------------------------------------------------------
// Sending, and what every client checks of every answer

/// Sends `message` and returns the answer as an item tree, after checking that it is in the
/// request's version and holds nothing that version does not define.
async fn exchange(client: &mut TlsClient, message: Item) -> Item {
    let v = message_version(&message);
    let bytes = client
        .send_raw(message.to_ttlv())
        .await
        .unwrap_or_else(|e| panic!("{v} exchange: {e}"));
    let answer = kmip::ttlv::decode(&bytes, &Limits::default()).expect("the answer is TTLV");
    assert_eq!(answer.tag, Tag::RESPONSE_MESSAGE);
    assert_eq!(
        message_version(&answer),
        v,
        "the answer's header must carry the request's version"
    );
    let mut undefined = Vec::new();
    undefined_in(&answer, v, &mut undefined);
    assert!(
        undefined.is_empty(),
        "a KMIP {v} client cannot read: {undefined:?}"
    );
    answer
}

fn message_version(message: &Item) -> ProtocolVersion {
    let header = &message.children()[0];
    let pv = header
        .child(Tag::PROTOCOL_VERSION)
        .expect("Protocol Version");
    let int = |tag| match pv.child(tag).map(|i| &i.value) {
        Some(Value::Integer(n)) => *n,
        other => panic!("{tag}: {other:?}"),
    };
    ProtocolVersion::new(
        int(Tag::PROTOCOL_VERSION_MAJOR),
        int(Tag::PROTOCOL_VERSION_MINOR),
    )
}

/// Tags, enumeration values and attribute names in `item` that `v` does not define.
fn undefined_in(item: &Item, v: ProtocolVersion, out: &mut Vec<String>) {
    if !item.tag.is_defined_in(v) {
        out.push(format!("tag {}", item.tag.name().unwrap_or("(unknown)")));
    }
    match &item.value {
        Value::Enumeration(e) => {
            if let Some(variant) = enum_for_tag(item.tag).and_then(|d| d.by_value(*e)) {
                if !variant.is_defined_in(v) {
                    out.push(format!(
                        "{} {}",
                        item.tag.name().unwrap_or("?"),
                        variant.name
                    ));
                }
            }
        }
        Value::TextString(name)
            if item.tag == Tag::ATTRIBUTE_NAME
                && !kmip::message::AttributeName::from_text(name).defined_in(v) =>
        {
            out.push(format!("attribute {name}"));
        }
        Value::Structure(children) => {
            for child in children {
                undefined_in(child, v, out);
            }
        }
        _ => {}
    }
}

fn enum_value(item: &Item) -> Option<u32> {
    match item.value {
        Value::Enumeration(e) => Some(e),
        _ => None,
    }
}

fn batch_items(answer: &Item) -> Vec<&Item> {
    answer.children_with(Tag::BATCH_ITEM).collect()
}

fn reason_of(item: &Item) -> Option<ResultReason> {
    item.child(Tag::RESULT_REASON)
        .and_then(enum_value)
        .and_then(ResultReason::from_value)
}

/// The payload of batch item `n`, which must have succeeded.
fn success(answer: &Item, n: usize) -> &Item {
    let item = batch_items(answer)[n];
    let status = item
        .child(Tag::RESULT_STATUS)
        .and_then(enum_value)
        .and_then(ResultStatus::from_value);
    assert_eq!(
        status,
        Some(ResultStatus::Success),
        "batch item {n}: {:?} {:?}",
        reason_of(item),
        item.child(Tag::RESULT_MESSAGE).map(|m| &m.value)
    );
    item.child(Tag::RESPONSE_PAYLOAD)
        .expect("a successful answer carries a payload")
}

/// The Result Reason of batch item `n`, which must have failed.
fn failure(answer: &Item, n: usize) -> ResultReason {
    let item = batch_items(answer)[n];
    assert_eq!(
        item.child(Tag::RESULT_STATUS)
            .and_then(enum_value)
            .and_then(ResultStatus::from_value),
        Some(ResultStatus::OperationFailed),
        "batch item {n} should have failed"
    );
    reason_of(item).expect("a failure carries a Result Reason")
}

async fn call(client: &mut TlsClient, v: ProtocolVersion, item: Item) -> Item {
    let answer = exchange(client, request(v, vec![], vec![item])).await;
    success(&answer, 0).clone()
}

fn text(item: &Item, tag: Tag) -> String {
    match item.child(tag).map(|i| &i.value) {
        Some(Value::TextString(s)) => s.clone(),
        other => panic!("{tag} should be text, is {other:?}"),
    }
}

fn bytes_of(item: &Item, tag: Tag) -> Vec<u8> {
    match item.child(tag).map(|i| &i.value) {
        Some(Value::ByteString(b)) => b.to_vec(),
        other => panic!("{tag} should be bytes, is {other:?}"),
    }
}

fn uid_of(payload: &Item) -> String {
    text(payload, Tag::UNIQUE_IDENTIFIER)
}

fn uids_of(payload: &Item) -> Vec<String> {
    payload
        .children_with(Tag::UNIQUE_IDENTIFIER)
        .map(|i| match &i.value {
            Value::TextString(s) => s.clone(),
            other => panic!("Unique Identifier {other:?}"),
        })
        .collect()
}

/// The 1.x attributes of a Get Attributes answer: (name, value).
fn attributes_of(payload: &Item) -> Vec<(String, Value)> {
    payload
        .children_with(Tag::ATTRIBUTE)
        .map(|a| (text(a, Tag::ATTRIBUTE_NAME), value_of(a)))
        .collect()
}

fn value_of(attribute: &Item) -> Value {
    attribute
        .child(Tag::ATTRIBUTE_VALUE)
        .expect("Attribute Value")
        .value
        .clone()
}

fn values_named(payload: &Item, name: &str) -> Vec<Value> {
    attributes_of(payload)
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

fn state_of(payload: &Item) -> State {
    match values_named(payload, "State").as_slice() {
        [Value::Enumeration(s)] => State::from_value(*s).expect("a State value"),
        other => panic!("one State expected, got {other:?}"),
    }
}

fn name_of(value: &Value) -> String {
    match value {
        Value::Structure(fields) => match fields.iter().find(|f| f.tag == Tag::NAME_VALUE) {
            Some(Item {
                value: Value::TextString(s),
                ..
            }) => s.clone(),
            other => panic!("Name Value {other:?}"),
        },
        other => panic!("Name {other:?}"),
    }
}

/// What a client that reads keys in clear checks of a Get answer: the object type it asked
/// about, a Raw key block that is not wrapped (a Key Value structure, no Key Wrapping Data),
/// and the key bytes. Returns the key block.
fn plain_raw_block(get: &Item, expected_type: ObjectType) -> Item {
    assert_eq!(
        get.child(Tag::OBJECT_TYPE).and_then(enum_value),
        Some(expected_type.value()),
        "Object Type"
    );
    let object_tag = match expected_type {
        ObjectType::SymmetricKey => Tag::SYMMETRIC_KEY,
        ObjectType::SecretData => Tag::SECRET_DATA,
        other => panic!("{other:?}"),
    };
    let block = get
        .child(object_tag)
        .and_then(|o| o.child(Tag::KEY_BLOCK))
        .expect("the object's Key Block");
    assert_eq!(
        block.child(Tag::KEY_FORMAT_TYPE).and_then(enum_value),
        Some(KeyFormatType::Raw.value()),
        "Key Format Type must be Raw"
    );
    assert!(
        block.child(Tag::KEY_WRAPPING_DATA).is_none(),
        "the key block must not be wrapped"
    );
    let value = block.child(Tag::KEY_VALUE).expect("Key Value");
    assert!(
        matches!(value.value, Value::Structure(_)),
        "a wrapped Key Value is a byte string; this client needs the structure"
    );
    block.clone()
}

fn key_material(block: &Item) -> Vec<u8> {
    bytes_of(
        block.child(Tag::KEY_VALUE).expect("Key Value"),
        Tag::KEY_MATERIAL,
    )
}

// ---------------------------------------------------------------------------------------
// The clients

/// Percona Server for MongoDB, KMIP 1.0: Register of an AES key it generated (Raw, no
/// Name), Activate, Get Attributes (State) until Active, Get. It rejects a Get answer that
/// is not Raw and unwrapped, and an answer holding a post-1.0 attribute (Fresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percona_server_for_mongodb_kmip_1_0() {
    let dev = Dev::start("psmdb");
    let mut c = dev.connect().await;
    let key = material(32);
    let registered = call(&mut c, V1_0, register_aes(&key, vec![], None)).await;
    let id = uid_of(&registered);
    call(&mut c, V1_0, op(Operation::Activate, vec![uid(&id)])).await;
    let mut state = State::PreActive;
    for _ in 0..5 {
        state = state_of(&call(&mut c, V1_0, get_attributes(&id, &["State"])).await);
        if state == State::Active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, State::Active, "the key never became Active");
    let got = call(&mut c, V1_0, op(Operation::Get, vec![uid(&id)])).await;
    let block = plain_raw_block(&got, ObjectType::SymmetricKey);
    assert_eq!(key_material(&block), key, "Get returns the registered key");
    // After the first Get the server changed Fresh; a second Get and State poll must still
    // not show it to 1.0 (checked by `exchange`).
    call(&mut c, V1_0, op(Operation::Get, vec![uid(&id)])).await;
    call(&mut c, V1_0, get_attributes(&id, &["State"])).await;
    // Not a request it sends, but the answer a 1.0 client gets when it asks for everything:
    // the server holds Fresh (1.1), Sensitive (1.4), Key Format Type (2.0)… and must show
    // none of them here.
    let all = call(&mut c, V1_0, get_attributes(&id, &[])).await;
    assert_eq!(state_of(&all), State::Active);
    dev.stop();
}

/// MongoDB Enterprise, KMIP 1.2: Create AES-256, Activate, Get Attributes (State), Get,
/// Encrypt with only the Unique Identifier and Data (the server picks the mode and IV and
/// must return the IV), Decrypt with that IV. With `useLegacyProtocol` it speaks 1.0 and
/// uses the key itself (no Encrypt/Decrypt, which 1.0 does not have).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_enterprise_kmip_1_2_and_legacy_1_0() {
    let dev = Dev::start("mongodb");
    let mut c = dev.connect().await;
    for v in [V1_2, V1_0] {
        let created = call(&mut c, v, create_aes(256, vec![])).await;
        assert_eq!(
            created.child(Tag::OBJECT_TYPE).and_then(enum_value),
            Some(ObjectType::SymmetricKey.value())
        );
        let id = uid_of(&created);
        call(&mut c, v, op(Operation::Activate, vec![uid(&id)])).await;
        let attrs = call(&mut c, v, get_attributes(&id, &["State"])).await;
        assert_eq!(state_of(&attrs), State::Active, "{v}");
        let got = call(&mut c, v, op(Operation::Get, vec![uid(&id)])).await;
        let block = plain_raw_block(&got, ObjectType::SymmetricKey);
        assert_eq!(key_material(&block).len(), 32, "{v}: an AES-256 key");
        if v == V1_0 {
            continue;
        }
        let plaintext = material(48);
        let encrypted = call(
            &mut c,
            v,
            op(
                Operation::Encrypt,
                vec![uid(&id), Item::bytes(Tag::DATA, plaintext.clone())],
            ),
        )
        .await;
        let ciphertext = bytes_of(&encrypted, Tag::DATA);
        let iv = bytes_of(&encrypted, Tag::IV_COUNTER_NONCE);
        assert_ne!(ciphertext, plaintext);
        let decrypted = call(
            &mut c,
            v,
            op(
                Operation::Decrypt,
                vec![
                    uid(&id),
                    Item::bytes(Tag::DATA, ciphertext),
                    Item::bytes(Tag::IV_COUNTER_NONCE, iv),
                ],
            ),
        )
        .await;
        assert_eq!(bytes_of(&decrypted, Tag::DATA), plaintext);
    }
    dev.stop();
}

/// libmongocrypt, KMIP 1.4: Register Secret Data of type Seed holding exactly 96 bytes,
/// Raw, with an empty Template-Attribute; Activate; Get without a Key Format Type. It
/// checks a Secret Data answer whose Raw Key Material is 96 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libmongocrypt_kmip_1_4() {
    let dev = Dev::start("mongocrypt");
    let mut c = dev.connect().await;
    let seed = material(96);
    let registered = call(&mut c, V1_4, register_secret(SECRET_SEED, &seed, vec![])).await;
    let id = uid_of(&registered);
    call(&mut c, V1_4, op(Operation::Activate, vec![uid(&id)])).await;
    let got = call(&mut c, V1_4, op(Operation::Get, vec![uid(&id)])).await;
    let block = plain_raw_block(&got, ObjectType::SecretData);
    assert_eq!(
        got.child(Tag::SECRET_DATA)
            .and_then(|s| s.child(Tag::SECRET_DATA_TYPE))
            .and_then(enum_value),
        Some(SECRET_SEED)
    );
    let material = key_material(&block);
    assert_eq!(material.len(), 96, "libmongocrypt takes exactly 96 bytes");
    assert_eq!(material, seed);
    dev.stop();
}

/// Percona pg_tde through libkmip: Register (1.4) of an AES key with a Name, its key block
/// also carrying a Key Compression Type; Locate (1.0) by Object Type and Name with Maximum
/// Items 16, where more than one hit is an error; Get (1.0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percona_pg_tde_libkmip() {
    let dev = Dev::start("pgtde");
    let mut c = dev.connect().await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let name = unique("pg_tde-principal");
        let key = material(32);
        let name_attr = attr("Name", name_value(&name));
        let registered = call(
            &mut c,
            V1_4,
            register_aes(&key, vec![name_attr], Some(EC_UNCOMPRESSED)),
        )
        .await;
        keys.push((name, key, uid_of(&registered)));
    }
    for (name, key, id) in &keys {
        let located = call(
            &mut c,
            V1_0,
            op(
                Operation::Locate,
                vec![
                    Item::integer(Tag::MAXIMUM_ITEMS, 16),
                    attr(
                        "Object Type",
                        Value::Enumeration(ObjectType::SymmetricKey.value()),
                    ),
                    attr("Name", name_value(name)),
                ],
            ),
        )
        .await;
        assert_eq!(
            uids_of(&located),
            vec![id.clone()],
            "exactly one key named {name}"
        );
        let got = call(&mut c, V1_0, op(Operation::Get, vec![uid(id)])).await;
        assert_eq!(
            key_material(&plain_raw_block(&got, ObjectType::SymmetricKey)),
            *key
        );
    }
    dev.stop();
}

/// Percona MySQL keyring_kmip through kmippp (libkmip's versions: Register 1.4, the rest
/// 1.0): Register of an AES key with a Name and an Object Group, Register of Secret Data
/// (Password); at start Locate by algorithm, object type, usage mask and Object Group, then
/// Get and Get Attributes (Name) for each key; removal is Revoke (reason Unspecified) then
/// Destroy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percona_mysql_keyring_kmip_kmippp() {
    let dev = Dev::start("kmippp");
    let mut c = dev.connect().await;
    let group = unique("mysql-keyring");
    let group_attr = || attr("Object Group", Value::TextString(group.clone()));
    let key_name = unique("percona_binlog");
    let key = material(32);
    let key_id = uid_of(
        &call(
            &mut c,
            V1_4,
            register_aes(
                &key,
                vec![attr("Name", name_value(&key_name)), group_attr()],
                None,
            ),
        )
        .await,
    );
    let secret_name = unique("mysql-secret");
    let secret = b"correct horse battery staple".to_vec();
    let secret_id = uid_of(
        &call(
            &mut c,
            V1_4,
            register_secret(
                SECRET_PASSWORD,
                &secret,
                vec![attr("Name", name_value(&secret_name)), group_attr()],
            ),
        )
        .await,
    );
    // A key outside the group, which the group's Locate must not return.
    call(&mut c, V1_4, register_aes(&material(32), vec![], None)).await;

    let locate = |group: Option<Item>| {
        let mut filters = vec![
            attr(
                "Cryptographic Algorithm",
                Value::Enumeration(CryptographicAlgorithm::Aes.value()),
            ),
            attr(
                "Object Type",
                Value::Enumeration(ObjectType::SymmetricKey.value()),
            ),
            attr(
                "Cryptographic Usage Mask",
                Value::Integer(
                    (CryptographicUsageMask::ENCRYPT | CryptographicUsageMask::DECRYPT).0 as i32,
                ),
            ),
        ];
        filters.extend(group);
        op(Operation::Locate, filters)
    };
    let located = call(&mut c, V1_0, locate(Some(group_attr()))).await;
    assert_eq!(uids_of(&located), vec![key_id.clone()]);
    let all = call(&mut c, V1_0, locate(None)).await;
    assert_eq!(uids_of(&all).len(), 2, "without the group both AES keys");
    for id in uids_of(&located) {
        let got = call(&mut c, V1_0, op(Operation::Get, vec![uid(&id)])).await;
        assert_eq!(
            key_material(&plain_raw_block(&got, ObjectType::SymmetricKey)),
            key
        );
        let names = call(&mut c, V1_0, get_attributes(&id, &["Name"])).await;
        let names: Vec<String> = values_named(&names, "Name").iter().map(name_of).collect();
        assert_eq!(names, vec![key_name.clone()]);
    }
    let got = call(&mut c, V1_0, op(Operation::Get, vec![uid(&secret_id)])).await;
    let block = plain_raw_block(&got, ObjectType::SecretData);
    assert_eq!(key_material(&block), secret);
    assert_eq!(
        got.child(Tag::SECRET_DATA)
            .and_then(|s| s.child(Tag::SECRET_DATA_TYPE))
            .and_then(enum_value),
        Some(SECRET_PASSWORD)
    );

    let revoke = |id: &str| {
        op(
            Operation::Revoke,
            vec![
                uid(id),
                Item::structure(
                    Tag::REVOCATION_REASON,
                    vec![Item::enumeration(
                        Tag::REVOCATION_REASON_CODE,
                        REVOKE_UNSPECIFIED,
                    )],
                ),
            ],
        )
    };
    // A registered key is Pre-Active. KMIP 1.4 §3.22 permits no Pre-Active → Deactivated
    // transition (a Revoke that is not for a compromise needs an Active object), so the
    // Revoke is refused with 1.x's state error; the Destroy that follows is transition 2.
    let answer = exchange(&mut c, request(V1_0, vec![], vec![revoke(&key_id)])).await;
    assert_eq!(failure(&answer, 0), ResultReason::PermissionDenied);
    call(&mut c, V1_0, op(Operation::Destroy, vec![uid(&key_id)])).await;
    // An Active secret: Revoke deactivates it, Destroy destroys it.
    call(&mut c, V1_0, op(Operation::Activate, vec![uid(&secret_id)])).await;
    call(&mut c, V1_0, revoke(&secret_id)).await;
    call(&mut c, V1_0, op(Operation::Destroy, vec![uid(&secret_id)])).await;
    for id in [&key_id, &secret_id] {
        let state = call(&mut c, V1_0, get_attributes(id, &["State"])).await;
        assert_eq!(state_of(&state), State::Destroyed);
    }
    let after = call(&mut c, V1_0, locate(Some(group_attr()))).await;
    assert!(uids_of(&after).is_empty(), "a destroyed key is not located");
    dev.stop();
}

/// VMware vSphere, KMIP 1.1: Discover Versions, Create AES-256, Get Attributes (State) right
/// after the Create, Get, Activate, Revoke, Locate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmware_vsphere_kmip_1_1() {
    let dev = Dev::start("vsphere");
    let mut c = dev.connect().await;
    let discovered = call(
        &mut c,
        V1_1,
        op(
            Operation::DiscoverVersions,
            vec![version_item(V1_1), version_item(V1_0)],
        ),
    )
    .await;
    let versions: Vec<ProtocolVersion> = discovered
        .children_with(Tag::PROTOCOL_VERSION)
        .map(|pv| {
            message_version(&Item::structure(
                Tag::RESPONSE_MESSAGE,
                vec![Item::structure(Tag::RESPONSE_HEADER, vec![pv.clone()])],
            ))
        })
        .collect();
    assert_eq!(
        versions,
        vec![V1_1, V1_0],
        "the versions it offered, in its order"
    );

    let name = unique("vsphere-kms");
    let id = uid_of(
        &call(
            &mut c,
            V1_1,
            create_aes(256, vec![attr("Name", name_value(&name))]),
        )
        .await,
    );
    let attrs = call(&mut c, V1_1, get_attributes(&id, &["State"])).await;
    assert_eq!(state_of(&attrs), State::PreActive);
    let got = call(&mut c, V1_1, op(Operation::Get, vec![uid(&id)])).await;
    assert_eq!(
        key_material(&plain_raw_block(&got, ObjectType::SymmetricKey)).len(),
        32
    );
    call(&mut c, V1_1, op(Operation::Activate, vec![uid(&id)])).await;
    let attrs = call(&mut c, V1_1, get_attributes(&id, &["State"])).await;
    assert_eq!(state_of(&attrs), State::Active);
    call(
        &mut c,
        V1_1,
        op(
            Operation::Revoke,
            vec![
                uid(&id),
                Item::structure(
                    Tag::REVOCATION_REASON,
                    vec![Item::enumeration(
                        Tag::REVOCATION_REASON_CODE,
                        kmip::spec::RevocationReasonCode::CessationOfOperation.value(),
                    )],
                ),
            ],
        ),
    )
    .await;
    let located = call(
        &mut c,
        V1_1,
        op(Operation::Locate, vec![attr("Name", name_value(&name))]),
    )
    .await;
    assert_eq!(uids_of(&located), vec![id.clone()]);
    let attrs = call(&mut c, V1_1, get_attributes(&id, &["State"])).await;
    assert_eq!(state_of(&attrs), State::Deactivated);
    dev.stop();
}

/// ScyllaDB, KMIP 1.2: Query on every new connection; Locate by Object Type, algorithm,
/// length, State Active, usage mask and its custom `x-key-namespace`; Create then Activate
/// when none is found; then one batch of Get (Raw) and Get Attributes (all) with the Batch
/// Order Option. (Its optional Template name is not sent: the server keeps no templates.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylladb_kmip_1_2() {
    let dev = Dev::start("scylla");
    let namespace = unique("scylla-ns");
    let ns_attr = || attr("x-key-namespace", Value::TextString(namespace.clone()));
    let locate = |namespace: Item| {
        let mut filters = vec![attr(
            "Object Type",
            Value::Enumeration(ObjectType::SymmetricKey.value()),
        )];
        filters.extend(aes_attributes(128));
        filters.push(attr("State", Value::Enumeration(State::Active.value())));
        filters.push(namespace);
        op(Operation::Locate, filters)
    };
    let mut created = None;
    for connection in 0..2 {
        let mut c = dev.connect().await;
        let query = call(
            &mut c,
            V1_2,
            op(
                Operation::Query,
                vec![
                    Item::enumeration(
                        Tag::QUERY_FUNCTION,
                        kmip::spec::QueryFunction::QueryOperations.value(),
                    ),
                    Item::enumeration(
                        Tag::QUERY_FUNCTION,
                        kmip::spec::QueryFunction::QueryObjects.value(),
                    ),
                ],
            ),
        )
        .await;
        let operations: Vec<u32> = query
            .children_with(Tag::OPERATION)
            .filter_map(enum_value)
            .collect();
        for needed in [
            Operation::Locate,
            Operation::Create,
            Operation::Activate,
            Operation::Get,
            Operation::GetAttributes,
        ] {
            assert!(
                operations.contains(&needed.value()),
                "Query lacks {needed:?}"
            );
        }
        assert!(query
            .children_with(Tag::OBJECT_TYPE)
            .any(|t| enum_value(t) == Some(ObjectType::SymmetricKey.value())));

        let found = uids_of(&call(&mut c, V1_2, locate(ns_attr())).await);
        let id = match (connection, &created) {
            (0, None) => {
                assert!(found.is_empty(), "a new namespace holds no key: {found:?}");
                // A Pre-Active key of the namespace is not a usable one.
                let id = uid_of(&call(&mut c, V1_2, create_aes(128, vec![ns_attr()])).await);
                assert!(uids_of(&call(&mut c, V1_2, locate(ns_attr())).await).is_empty());
                call(&mut c, V1_2, op(Operation::Activate, vec![uid(&id)])).await;
                created = Some(id.clone());
                id
            }
            _ => {
                assert_eq!(found, created.clone().into_iter().collect::<Vec<_>>());
                found[0].clone()
            }
        };
        let other = attr(
            "x-key-namespace",
            Value::TextString(format!("{namespace}-other")),
        );
        assert!(uids_of(&call(&mut c, V1_2, locate(other)).await).is_empty());

        let answer = exchange(
            &mut c,
            request(
                V1_2,
                vec![Item::boolean(Tag::BATCH_ORDER_OPTION, true)],
                vec![
                    op(
                        Operation::Get,
                        vec![
                            uid(&id),
                            Item::enumeration(Tag::KEY_FORMAT_TYPE, KeyFormatType::Raw.value()),
                        ],
                    ),
                    op(Operation::GetAttributes, vec![uid(&id)]),
                ],
            ),
        )
        .await;
        assert_eq!(batch_items(&answer).len(), 2);
        let block = plain_raw_block(success(&answer, 0), ObjectType::SymmetricKey);
        assert_eq!(key_material(&block).len(), 16);
        let attrs = success(&answer, 1);
        assert_eq!(uid_of(attrs), id);
        assert_eq!(state_of(attrs), State::Active);
        assert_eq!(
            values_named(attrs, "Cryptographic Algorithm"),
            vec![Value::Enumeration(CryptographicAlgorithm::Aes.value())]
        );
        assert_eq!(
            values_named(attrs, "Cryptographic Length"),
            vec![Value::Integer(128)]
        );
        assert_eq!(
            values_named(attrs, "x-key-namespace"),
            vec![Value::TextString(namespace.clone())]
        );
    }
    dev.stop();
}

/// NetApp ONTAP, KMIP 1.2: about sixteen `x-NETAPP-*` text attributes on Register and on
/// Create, read back by name and among all attributes, and found by Locate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netapp_ontap_custom_attributes() {
    let dev = Dev::start("ontap");
    let mut c = dev.connect().await;
    let names = [
        "x-NETAPP-ClusterId",
        "x-NETAPP-ClusterName",
        "x-NETAPP-NodeId",
        "x-NETAPP-NodeName",
        "x-NETAPP-Vserver",
        "x-NETAPP-VserverId",
        "x-NETAPP-KeyId",
        "x-NETAPP-KeyTag",
        "x-NETAPP-KeyType",
        "x-NETAPP-KeyUsage",
        "x-NETAPP-Product",
        "x-NETAPP-ProductVersion",
        "x-NETAPP-SerialNumber",
        "x-NETAPP-Application",
        "x-NETAPP-ApplicationVersion",
        "x-NETAPP-Policy",
    ];
    for create in [false, true] {
        let values: Vec<String> = names.iter().map(|n| unique(&n[9..])).collect();
        let custom: Vec<Item> = names
            .iter()
            .zip(&values)
            .map(|(n, v)| attr(n, Value::TextString(v.clone())))
            .collect();
        let payload = match create {
            true => call(&mut c, V1_2, create_aes(256, custom)).await,
            false => call(&mut c, V1_2, register_aes(&material(32), custom, None)).await,
        };
        let id = uid_of(&payload);
        let named = call(&mut c, V1_2, get_attributes(&id, &names)).await;
        let all = call(&mut c, V1_2, get_attributes(&id, &[])).await;
        for (name, value) in names.iter().zip(&values) {
            for answer in [&named, &all] {
                assert_eq!(
                    values_named(answer, name),
                    vec![Value::TextString(value.clone())],
                    "{name} (create: {create})"
                );
            }
        }
        assert_eq!(attributes_of(&named).len(), names.len());
        let located = call(
            &mut c,
            V1_2,
            op(
                Operation::Locate,
                vec![attr(names[6], Value::TextString(values[6].clone()))],
            ),
        )
        .await;
        assert_eq!(uids_of(&located), vec![id]);
    }
    dev.stop();
}

/// FortiOS, KMIP 1.0 header with Authentication → Credential (Username and Password), also in
/// the doubly nested form some clients send; Locate with its Name inside a Template-Attribute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fortios_template_locate_and_credential() {
    let dev = Dev::start("fortios");
    let mut c = dev.connect().await;
    let credential = || {
        Item::structure(
            Tag::CREDENTIAL,
            vec![
                Item::enumeration(
                    Tag::CREDENTIAL_TYPE,
                    kmip::spec::CredentialType::UsernameAndPassword.value(),
                ),
                Item::structure(
                    Tag::CREDENTIAL_VALUE,
                    vec![
                        Item::text(Tag::USERNAME, "fortigate"),
                        Item::text(Tag::PASSWORD, "not-a-secret"),
                    ],
                ),
            ],
        )
    };
    let plain = Item::structure(Tag::AUTHENTICATION, vec![credential()]);
    let nested = Item::structure(
        Tag::AUTHENTICATION,
        vec![Item::structure(Tag::CREDENTIAL, vec![credential()])],
    );
    for authentication in [plain, nested] {
        let name = unique("fortigate");
        let with_auth = |item: Item| request(V1_0, vec![authentication.clone()], vec![item]);
        let created = exchange(
            &mut c,
            with_auth(create_aes(256, vec![attr("Name", name_value(&name))])),
        )
        .await;
        let id = uid_of(success(&created, 0));
        let located = exchange(
            &mut c,
            with_auth(op(
                Operation::Locate,
                vec![template(vec![attr("Name", name_value(&name))])],
            )),
        )
        .await;
        assert_eq!(uids_of(success(&located, 0)), vec![id.clone()]);
        let got = exchange(&mut c, with_auth(op(Operation::Get, vec![uid(&id)]))).await;
        assert_eq!(
            key_material(&plain_raw_block(success(&got, 0), ObjectType::SymmetricKey)).len(),
            32
        );
    }
    dev.stop();
}

/// Synology DSM, KMIP 1.2: Operation Policy Name in the Create template; Modify Attribute
/// (Name) on the Pre-Active key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synology_dsm_policy_and_modify() {
    let dev = Dev::start("synology");
    let mut c = dev.connect().await;
    let name = unique("synology-volume");
    let id = uid_of(
        &call(
            &mut c,
            V1_2,
            create_aes(
                256,
                vec![
                    attr("Name", name_value(&name)),
                    attr("Operation Policy Name", Value::TextString("default".into())),
                ],
            ),
        )
        .await,
    );
    let state = call(&mut c, V1_2, get_attributes(&id, &["State"])).await;
    assert_eq!(state_of(&state), State::PreActive);
    let renamed = unique("synology-volume-renamed");
    let modified = call(
        &mut c,
        V1_2,
        op(
            Operation::ModifyAttribute,
            vec![uid(&id), attr("Name", name_value(&renamed))],
        ),
    )
    .await;
    assert_eq!(uid_of(&modified), id);
    let echoed = modified
        .child(Tag::ATTRIBUTE)
        .expect("1.x echoes the attribute");
    assert_eq!(name_of(&value_of(echoed)), renamed);
    let read = call(
        &mut c,
        V1_2,
        get_attributes(&id, &["Name", "Operation Policy Name"]),
    )
    .await;
    let names: Vec<String> = values_named(&read, "Name").iter().map(name_of).collect();
    assert_eq!(names, vec![renamed]);
    assert_eq!(
        values_named(&read, "Operation Policy Name"),
        vec![Value::TextString("default".into())]
    );
    dev.stop();
}

/// The version check itself: a 1.0 answer holding Fresh (a 1.1 attribute) or a 2.0 tag is
/// caught; the same attribute in 1.1 is not.
#[test]
fn the_version_check_sees_what_a_version_does_not_define() {
    let fresh = attr("Fresh", Value::Boolean(true));
    let mut found = Vec::new();
    undefined_in(&fresh, V1_0, &mut found);
    assert_eq!(found, vec!["attribute Fresh".to_string()]);
    found.clear();
    undefined_in(&fresh, V1_1, &mut found);
    assert!(found.is_empty(), "{found:?}");
    let attributes = Item::structure(Tag::ATTRIBUTES, vec![]);
    undefined_in(&attributes, V1_4, &mut found);
    assert_eq!(found, vec!["tag Attributes".to_string()]);
}

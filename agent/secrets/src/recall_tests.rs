//! Recall of the built-in catalog on provider-shaped fake tokens.
//!
//! No token is written here: each case is a template of the provider's documented format
//! (prefix, alphabet, length, the context a token is usually found in) and the test fills it
//! with random characters. `«…»` marks the secret; `{set:n}` is n random characters of a set,
//! `{set:n,m}` between n and m, `{uuid}` a random UUID. Every rule of the catalog has a case;
//! each case is drawn several times and put in several carriers (alone, in a log line, at a line
//! end). A draw is caught when the secret no longer appears after redaction.
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "a recall ratio to a few digits; random indices below a slice length"
)]

use super::{builtin, builtin_spec};

/// (rule expected to name it, template).
const CASES: &[(&str, &str)] = &[
    ("aws-access-key", "aws_access_key_id = «AKIA{AN:16}»"),
    ("aws-access-key", "«ASIA{AN:16}»"),
    ("aws-secret-access-key", "aws_secret_access_key=«{b64:40}»"),
    (
        "aws-secret-access-key",
        "\"SecretAccessKey\": \"«{b64:40}»\",",
    ),
    ("aws-session-token", "AWS_SESSION_TOKEN=«{b64:300}»"),
    ("aws-bedrock-api-key", "«ABSKQmVkcm9ja0FQSUtleS{b64:100}»"),
    ("google-api-key", "key=«AIza{an_:35}»"),
    (
        "google-oauth-client-secret",
        "client_secret: «GOCSPX-{an_:28}»",
    ),
    ("google-oauth-access-token", "token «ya29.{an_:120}»"),
    (
        "google-oauth-refresh-token",
        "refresh_token=«1//0{an_:100}»",
    ),
    (
        "gcp-service-account-key-id",
        "\"private_key_id\": \"«{hex:40}»\",",
    ),
    (
        "azure-storage-account-key",
        "DefaultEndpointsProtocol=https;AccountName=acct{lan:6};AccountKey=«{b64:86}==»;EndpointSuffix=core.windows.net",
    ),
    (
        "azure-sas-signature",
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&se=2030-01-01&sig=«{an:43}%3D»",
    ),
    (
        "azure-ad-client-secret",
        "client secret «{an:3}{d:1}Q~{an:34}»",
    ),
    ("azure-annotated-key", "«{an:52}JQQJ9{an:27}»"),
    ("azure-devops-pat", "AZURE_DEVOPS_PAT=«{b32l:52}»"),
    ("digitalocean-token", "«dop_v1_{hex:64}»"),
    ("alibaba-access-key-id", "«LTAI{an:16,20}»"),
    (
        "alibaba-access-key-secret",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET=«{an:30}»",
    ),
    ("tencent-cloud-secret-id", "«AKID{an:32}»"),
    ("ibm-cloud-api-key", "IBM_CLOUD_API_KEY=«{an_:44}»"),
    ("cloudflare-api-token", "CLOUDFLARE_API_TOKEN=«{an_:40}»"),
    ("cloudflare-origin-ca-key", "«v1.0-{hex:24}-{hex:146}»"),
    ("scaleway-secret-key", "SCW_SECRET_KEY=«{uuid}»"),
    ("flyio-token", "FLY_API_TOKEN=FlyV1 «fm2_{b64:200}»"),
    ("heroku-api-key", "«HRKU-{an_:60}»"),
    ("heroku-api-key-legacy", "HEROKU_API_KEY=«{uuid}»"),
    ("netlify-token", "«nfp_{an:36}»"),
    ("vercel-token", "VERCEL_TOKEN=«{an:24}»"),
    ("render-api-key", "«rnd_{an:32}»"),
    ("supabase-token", "«sbp_{hex:40}»"),
    ("planetscale-token", "«pscale_tkn_{an_:43}»"),
    ("doppler-token", "«dp.pt.{an:43}»"),
    ("pulumi-token", "«pul-{hex:40}»"),
    ("terraform-cloud-token", "«{an:14}.atlasv1.{an_:67}»"),
    ("vault-token", "VAULT_TOKEN=«hvs.{an_:90}»"),
    ("vault-token-legacy", "VAULT_TOKEN=«s.{an:24}»"),
    ("databricks-token", "«dapi{hex:32}»"),
    ("dynatrace-token", "«dt0c01.{AN:24}.{AN:64}»"),
    ("openshift-token", "oc login --token=«sha256~{an_:43}»"),
    ("github-pat", "«ghp_{an:36}»"),
    ("github-fine-grained-pat", "«github_pat_{an:22}_{an:59}»"),
    ("github-oauth-token", "«gho_{an:36}»"),
    ("github-app-token", "«ghs_{an:36}»"),
    ("github-refresh-token", "«ghr_{an:76}»"),
    ("gitlab-pat", "«glpat-{an_:20}»"),
    ("gitlab-runner-token", "«glrt-{an_:20}»"),
    ("gitlab-deploy-token", "«gldt-{an_:20}»"),
    ("gitlab-token", "«glptt-{hex:40}»"),
    ("bitbucket-app-password", "«ATBB{an:32}»"),
    ("atlassian-api-token", "«ATATT3{an_:180}»"),
    ("atlassian-api-token-legacy", "JIRA_API_TOKEN=«{an:24}»"),
    ("circleci-token", "«CCIPAT_{an:22}_{hex:40}»"),
    ("circleci-token-legacy", "CIRCLE_TOKEN=«{hex:40}»"),
    ("travis-ci-token", "TRAVIS_TOKEN=«{an_:22}»"),
    ("buildkite-token", "«bkua_{hex:40}»"),
    ("sonar-token", "«sqp_{hex:40}»"),
    ("jenkins-api-token", "JENKINS_API_TOKEN=«11{hex:32}»"),
    ("codecov-token", "CODECOV_TOKEN=«{uuid}»"),
    ("snyk-token", "SNYK_TOKEN=«{uuid}»"),
    ("slack-bot-token", "«xoxb-{d:12}-{d:13}-{an:24}»"),
    ("slack-user-token", "«xoxp-{d:12}-{d:12}-{d:13}-{hex:32}»"),
    ("slack-app-token", "«xapp-1-{AN:11}-{d:13}-{hex:64}»"),
    ("slack-config-token", "«xoxe.xoxp-1-{an:166}»"),
    ("slack-token", "«xoxs-{d:10}-{an:20}»"),
    (
        "slack-webhook",
        "https://hooks.slack.com/services/«T{AN:8}/B{AN:10}/{an:24}»",
    ),
    (
        "discord-bot-token",
        "DISCORD_BOT_TOKEN=«M{an_:25}.{an_:6}.{an_:38}»",
    ),
    (
        "discord-webhook",
        "https://discord.com/api/webhooks/{d:18}/«{an_:68}»",
    ),
    (
        "telegram-bot-token",
        "https://api.telegram.org/bot«{d:10}:AA{an_:33}»/getMe",
    ),
    (
        "teams-webhook",
        "https://contoso.webhook.office.com/«webhookb2/{uuid}@{uuid}/IncomingWebhook/{an:32}/{uuid}»",
    ),
    ("twilio-auth-token", "TWILIO_AUTH_TOKEN=«{hex:32}»"),
    ("stripe-key", "«sk_live_{an:99}»"),
    ("stripe-key", "«rk_test_{an:24}»"),
    ("stripe-webhook-secret", "«whsec_{an:32}»"),
    ("square-token", "«EAAA{an_:60}»"),
    (
        "braintree-access-token",
        "«access_token$production${lan:16}${hex:32}»",
    ),
    ("paypal-client-secret", "PAYPAL_CLIENT_SECRET=«E{an_:79}»"),
    ("adyen-api-key", "ADYEN_API_KEY=«AQE{an:100}»"),
    ("shopify-token", "«shpat_{hex:32}»"),
    ("flutterwave-secret-key", "«FLWSECK_TEST-{hex:32}-X»"),
    ("plaid-access-token", "«access-sandbox-{uuid}»"),
    ("shipping-api-key", "«EZAK{hex:54}»"),
    ("anthropic-api-key", "«sk-ant-api03-{an_:93}AA»"),
    ("openrouter-api-key", "«sk-or-v1-{hex:64}»"),
    ("openai-api-key", "«sk-proj-{an_:74}T3BlbkFJ{an_:74}»"),
    ("openai-api-key", "«sk-{an:20}T3BlbkFJ{an:20}»"),
    ("huggingface-token", "«hf_{al:34}»"),
    ("groq-api-key", "«gsk_{an:52}»"),
    ("replicate-api-token", "«r8_{an:37}»"),
    ("perplexity-api-key", "«pplx-{an:48}»"),
    ("xai-api-key", "«xai-{an:80}»"),
    ("langsmith-api-key", "«lsv2_pt_{hex:32}_{hex:10}»"),
    ("pinecone-api-key", "«pcsk_{an:5}_{an:63}»"),
    ("tavily-api-key", "«tvly-dev-{an:32}»"),
    ("elevenlabs-api-key", "«sk_{hex:48}»"),
    ("fireworks-api-key", "«fw_{an:24}»"),
    ("cerebras-api-key", "«csk-{lan:48}»"),
    ("cohere-api-key", "COHERE_API_KEY=«{an:40}»"),
    ("mistral-api-key", "MISTRAL_API_KEY=«{an:32}»"),
    ("wandb-api-key", "WANDB_API_KEY=«{hex:40}»"),
    ("api-key-sk", "DEEPSEEK_API_KEY=«sk-{hex:32}»"),
    ("npm-token", "«npm_{an:36}»"),
    (
        "npmrc-auth-token",
        "//registry.npmjs.org/:_authToken=«{an:40}»",
    ),
    ("pypi-token", "«pypi-AgEIcHlwaS5vcmc{an_:150}»"),
    ("rubygems-token", "«rubygems_{hex:48}»"),
    ("nuget-api-key", "«oy2{lan:43}»"),
    ("docker-hub-token", "«dckr_pat_{an_:27}»"),
    ("crates-io-token", "«cio{an:32}»"),
    ("jfrog-token", "«AKCp{an:69}»"),
    ("clojars-token", "«CLOJARS_{lan:60}»"),
    ("sendgrid-api-key", "«SG.{an_:22}.{an_:43}»"),
    ("mailgun-api-key", "«key-{hex:32}»"),
    (
        "mailgun-api-key-new",
        "MAILGUN_API_KEY=«{hex:32}-{hex:8}-{hex:8}»",
    ),
    ("mailchimp-api-key", "«{hex:32}-us{d:2}»"),
    ("postmark-token", "POSTMARK_SERVER_TOKEN=«{uuid}»"),
    ("brevo-api-key", "«xkeysib-{hex:64}-{an:16}»"),
    ("resend-api-key", "«re_{an:8}_{an:24}»"),
    ("vonage-api-secret", "VONAGE_API_SECRET=«{an:16}»"),
    (
        "postgres-uri",
        "postgresql://app:«{an:20}»@db.internal:5432/app",
    ),
    ("mysql-uri", "mysql://root:«{an:16}»@127.0.0.1:3306/shop"),
    (
        "mongodb-uri",
        "mongodb+srv://admin:«{an:24}»@cluster0.abcde.mongodb.net/test",
    ),
    ("redis-uri", "redis://:«{an:32}»@cache:6379/0"),
    ("amqp-uri", "amqp://worker:«{an:20}»@rabbit:5672/"),
    (
        "service-uri",
        "smtp://mailer:«{an:20}»@smtp.example.net:587",
    ),
    (
        "url-credentials",
        "https://deploy:«{an:20}»@git.example.org/repo.git",
    ),
    (
        "private-key",
        "«-----BEGIN RSA PRIVATE KEY-----\n{b64:64}\n{b64:64}\n-----END RSA PRIVATE KEY-----»",
    ),
    (
        "private-key",
        "«-----BEGIN OPENSSH PRIVATE KEY-----\n{b64:70}\n-----END OPENSSH PRIVATE KEY-----»",
    ),
    (
        "pgp-private-key",
        "«-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{b64:64}\n-----END PGP PRIVATE KEY BLOCK-----»",
    ),
    (
        "putty-private-key",
        "«PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\n{b64:44}\nPrivate-MAC: {hex:64}»",
    ),
    ("age-secret-key", "«AGE-SECRET-KEY-1{bech:58}»"),
    (
        "base64-private-key",
        "client-key-data: «LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQ{b64:200}»",
    ),
    ("jwt", "«eyJ{an_:20}.eyJ{an_:60}.{an_:43}»"),
    ("bearer-token", "Authorization: Bearer «{an:40}»"),
    ("basic-auth-header", "Authorization: Basic «{b64:40}»"),
    ("okta-api-token", "Authorization: SSWS «00{an_:40}»"),
    ("auth0-client-secret", "AUTH0_CLIENT_SECRET=«{an_:64}»"),
    ("datadog-key", "DD_API_KEY=«{hex:32}»"),
    ("new-relic-key", "«NRAK-{AN:27}»"),
    ("sentry-token", "«sntrys_{b64:120}»"),
    ("grafana-token", "«glsa_{an:32}_{hex:8}»"),
    ("linear-api-key", "«lin_api_{an:40}»"),
    ("notion-token", "«ntn_{d:11}{an:35}»"),
    ("figma-token", "«figd_{an_:40}»"),
    ("dropbox-token", "«sl.u.{an_:140}»"),
    ("asana-token", "ASANA_PAT=«1/{d:16}:{lan:32}»"),
    ("airtable-token", "«pat{an:14}.{hex:64}»"),
    ("postman-api-key", "«PMAK-{hex:24}-{hex:34}»"),
    ("contentful-token", "«CFPAT-{an_:43}»"),
    ("typeform-token", "«tfp_{an_:59}»"),
    ("hubspot-token", "«pat-na1-{uuid}»"),
    ("mapbox-secret-token", "«sk.eyJ{an_:60}.{an_:22}»"),
    ("onepassword-token", "«ops_eyJ{b64:300}»"),
    ("prefect-api-key", "«pnu_{an:36}»"),
    ("segment-token", "«sgp_{an:64}»"),
    ("launchdarkly-key", "«sdk-{uuid}»"),
    ("firebase-fcm-server-key", "«AAAA{an_:7}:APA91b{an_:134}»"),
    ("yandex-token", "«y0_{an_:55}»"),
    ("algolia-admin-key", "ALGOLIA_ADMIN_KEY=«{hex:32}»"),
    ("rollbar-token", "ROLLBAR_ACCESS_TOKEN=«{hex:32}»"),
    ("fastly-api-token", "FASTLY_API_TOKEN=«{an_:32}»"),
    ("ngrok-authtoken", "NGROK_AUTHTOKEN=«{an:27}_{an:21}»"),
    (
        "facebook-access-token",
        "FACEBOOK_ACCESS_TOKEN=«EAA{an:150}»",
    ),
    (
        "twitter-bearer-token",
        "TWITTER_BEARER_TOKEN=«AAAAAAAAAAAAAAAAAAAAA{an:80}»",
    ),
    ("misc-prefixed-token", "«rdme_{lan:70}»"),
    (
        "url-query-secret",
        "GET /v1/data?access_token=«{an:32}»&page=2",
    ),
    (
        "generic-password",
        "{\"username\": \"svc\", \"password\": \"«{pw:12}»\"}",
    ),
    ("generic-password-unquoted", "DB_PASSWORD=«{an:12}{d:2}»"),
    (
        "generic-password-unquoted",
        "mysql --password «{an:10}{d:2}» -h db",
    ),
    ("generic-secret", "\"api_key\": \"«{an:32}»\""),
    ("generic-secret", "SECRET_TOKEN = '«{an:40}»'"),
    ("generic-secret-unquoted", "SECRET_TOKEN=«{an:40}»"),
    ("generic-secret-unquoted", "api_key: «{an:32}»"),
];

/// How many times each case is drawn, per carrier.
const DRAWS: usize = 8;

/// Where a drawn text is put.
const CARRIERS: &[(&str, &str)] = &[("", ""), ("log line: ", " (end)"), ("", "\n")];

/// xorshift64*: a repeatable random stream (a fixed seed per case).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick(&mut self, set: &str) -> char {
        let b = set.as_bytes();
        char::from(b[self.below(b.len())])
    }
}

fn charset(name: &str) -> &'static str {
    const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
    match name {
        "an" => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "an_" => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
        "AN" => "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        "lan" => "abcdefghijklmnopqrstuvwxyz0123456789",
        "al" => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        "AL" => UPPER,
        "lc" => LOWER,
        "hex" => "0123456789abcdef",
        "d" => "0123456789",
        "b64" => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        "b32l" => "abcdefghijklmnopqrstuvwxyz234567",
        "bech" => "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
        "pw" => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!@#%^*-_+=.",
        other => panic!("unknown character set {other}"),
    }
}

/// Fills `template`: returns the text and the secret in it.
fn draw(template: &str, rng: &mut Rng) -> (String, String) {
    let mut text = String::new();
    let mut secret = String::new();
    let mut in_secret = false;
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        let piece = match c {
            '«' => {
                in_secret = true;
                continue;
            }
            '»' => {
                in_secret = false;
                continue;
            }
            '{' if chars.peek().is_some_and(char::is_ascii_alphabetic) => {
                let mut spec = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    spec.push(c);
                }
                expand(&spec, rng)
            }
            c => c.to_string(),
        };
        text.push_str(&piece);
        if in_secret {
            secret.push_str(&piece);
        }
    }
    (text, secret)
}

fn expand(spec: &str, rng: &mut Rng) -> String {
    if spec == "uuid" {
        let hex = |rng: &mut Rng, n| {
            (0..n)
                .map(|_| rng.pick("0123456789abcdef"))
                .collect::<String>()
        };
        return format!(
            "{}-{}-4{}-{}{}-{}",
            hex(rng, 8),
            hex(rng, 4),
            hex(rng, 3),
            rng.pick("89ab"),
            hex(rng, 3),
            hex(rng, 12)
        );
    }
    let (set, len) = spec.split_once(':').expect("set:len");
    let len = match len.split_once(',') {
        Some((lo, hi)) => {
            let (lo, hi): (usize, usize) = (lo.parse().expect("n"), hi.parse().expect("m"));
            lo + rng.below(hi - lo + 1)
        }
        None => len.parse().expect("n"),
    };
    let set = charset(set);
    (0..len).map(|_| rng.pick(set)).collect()
}

#[test]
fn every_rule_has_a_case() {
    let covered: Vec<&str> = CASES.iter().map(|(id, _)| *id).collect();
    let missing: Vec<&str> = builtin_spec()
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !covered.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a recall case: {missing:?}"
    );
    for (id, _) in CASES {
        assert!(
            builtin_spec().rules.iter().any(|r| r.id == *id),
            "case for unknown rule {id}"
        );
    }
}

#[test]
fn recall_on_provider_shaped_fake_tokens() {
    let rules = builtin();
    let (mut drawn, mut caught, mut named) = (0usize, 0usize, 0usize);
    let mut misses = Vec::new();
    let mut misnamed = Vec::new();
    for (n, (id, template)) in CASES.iter().enumerate() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1).wrapping_mul(0x1000_0000_01B3));
        for _ in 0..DRAWS {
            for (before, after) in CARRIERS {
                let (text, secret) = draw(template, &mut rng);
                let mut s = format!("{before}{text}{after}");
                let mut what = Vec::new();
                rules.redact(&mut s, &mut what);
                drawn += 1;
                if s.contains(&secret) {
                    misses.push(format!("{id}: {text:?}"));
                    continue;
                }
                caught += 1;
                if what.iter().any(|w| w == id) {
                    named += 1;
                } else {
                    misnamed.push(format!("{id} named {what:?}: {text:?}"));
                }
            }
        }
    }
    let recall = caught as f64 / drawn as f64;
    println!(
        "secret recall: {caught}/{drawn} = {:.2}% over {} cases of {} rules; named by the expected rule: {named}",
        recall * 100.0,
        CASES.len(),
        builtin_spec().rules.len()
    );
    for m in misses.iter().take(40) {
        println!("  missed {m}");
    }
    for m in misnamed.iter().take(20) {
        println!("  {m}");
    }
    assert!(recall >= 0.95, "recall {recall:.3} < 0.95");
}

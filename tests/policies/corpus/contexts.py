"""Hand-written contexts for the corpus positives: the sentences, pastes, configs, logs and
code in which people put sensitive values into prompts.

Each context is ``(label, text)``; ``text`` holds one marker for the value:

* ``{v}``: the value as is;
* ``{v_json}``: the value as it appears inside a JSON string (newlines as ``\\n``);
* ``{v_indent}``: the value with every line after the first indented by four spaces (a
  YAML block scalar).

``{env}`` is the credential's usual variable name. Nothing here is generated: the values
come from ``values.py``.
"""

from __future__ import annotations

Context = tuple[str, str]

CARD: tuple[Context, ...] = (
    ("update card on file", "Please update the card on file to {v}, exp 09/27, CVC 412. The old one was lost."),
    ("declined at checkout", "My card {v} keeps getting declined at checkout even though I have funds. Why?"),
    ("double charge complaint", "Hi, I was charged twice for order 55102 on my card {v}. Can you draft a "
                                "polite refund request to the merchant?"),
    ("csv export", "customer,card_number,expiry\nR. Alvarez,{v},11/27\n"),
    ("json record", '{"cardholder": "Dana Whitfield", "number": "{v}", "exp_month": 4, "exp_year": 2028}'),
    ("payment form paste", "Card number: {v}\nExpiry: 08/26\nCVV: 331\nName on card: K. Osei"),
    ("payment log line", "2024-05-02T09:14:11Z WARN payments: authorization failed pan={v} "
                         "reason=insufficient_funds attempt=2"),
    ("sql insert", "INSERT INTO payment_methods (customer_id, pan, brand) VALUES (8812, '{v}', 'card');"),
    ("call transcript", "Agent: Could you read me the long number on the front of the card?\n"
                        "Caller: Sure, it's {v}, and it expires in March."),
    ("travel email", "Hi team, the corporate card {v} is blocked for the Berlin trip - can someone in "
                     "finance call the bank?"),
    ("translate request", "Translate to German: 'We have charged 49.00 EUR to your card {v}.'"),
    ("debug test", "Why does my validation function reject {v}? It's a real card my customer used."),
)

IBAN: tuple[Context, ...] = (
    ("wire instruction", "Please wire the deposit to IBAN {v}, reference INV-2291, before Friday."),
    ("german invoice footer", "Bankverbindung: Sparkasse Köln, IBAN {v}, Verwendungszweck Rechnung 2024-118"),
    ("beneficiary block", "Beneficiary: Müller Logistik GmbH\nIBAN: {v}\nReference: PO 7731"),
    ("json payout", '{"payout_method": "sepa", "iban": "{v}", "holder": "Ana Lopes"}'),
    ("change payout account", "I moved banks - can you update my payout account to {v} from next month?"),
    ("supplier csv", "supplier,iban,currency\nAcme Components BV,{v},EUR\n"),
    ("salary email", "Hello HR, my salary should go to my new account {v} starting this month. Thanks!"),
    ("french rib", "Relevé d'identité bancaire - titulaire: Mme Claire Martin - IBAN {v}"),
    ("refund reply", "Draft a reply confirming we'll refund 149 EUR to the customer's IBAN {v} within 5 days."),
)

EMAIL: tuple[Context, ...] = (
    ("forward request", "Forward the renewal quote to {v} and cc me."),
    ("email header", "From: Customer <{v}>\nSubject: Refund for order 55102\n\nHi, I still haven't received it."),
    ("signature", "Thanks,\nJordan\nSenior Account Manager\n{v}"),
    ("crm csv", "name,email,plan\nJ. Okafor,{v},enterprise\n"),
    ("json user", '{"user_id": 88120, "email": "{v}", "plan": "pro"}'),
    ("git config", "git config --global user.email \"{v}\""),
    ("reply-to", "Reply-To: {v}"),
    ("meeting notes", "Action item: send the signed NDA to {v} by Thursday."),
    ("support ticket", "Customer {v} reports that the export button does nothing on Safari 17."),
    ("sql where", "SELECT * FROM accounts WHERE email = '{v}';"),
    ("summarize thread", "Summarize this thread. The last message was from {v} asking about the invoice."),
)

PHONE: tuple[Context, ...] = (
    ("call back", "Please call me back at {v} after 5pm, I'm in meetings until then."),
    ("signature", "Best regards,\nSam Keller\nHead of Operations\nMobile: {v}"),
    ("json contact", '{"name": "Lena Fischer", "phone": "{v}", "preferred_contact": "sms"}'),
    ("csv contacts", "name,phone,city\nT. Nowak,{v},Warsaw\n"),
    ("whatsapp", "You can reach the site manager on WhatsApp: {v}"),
    ("emergency contact", "Emergency contact for the offsite: my husband, {v}."),
    ("delivery note", "Driver: ring {v} when you arrive, the gate code changed."),
    ("crm note", "Left a voicemail for the customer at {v}; follow up on Monday about the renewal."),
    ("sms draft", "Write an SMS reminder for the dentist appointment and send it to {v}."),
)

US_SSN: tuple[Context, ...] = (
    ("onboarding", "New hire paperwork: SSN {v}, start date June 3, department Finance."),
    ("w-9", "W-9 details - Name: Robert Chen, TIN (SSN): {v}, address on file."),
    ("patient record", "Patient: M. Rossi, DOB 1979-02-14, SSN {v}, insurance pending."),
    ("json applicant", '{"applicant": "Grace Kim", "ssn": "{v}", "income": 84000}'),
    ("csv payroll", "employee,ssn,salary\nA. Haddad,{v},72000\n"),
    ("loan email", "For the loan application my social security number is {v}. Let me know what else you need."),
    ("tax prep", "Fill in the 1040 header: taxpayer SSN {v}, filing status single."),
)

US_SSN_BARE: tuple[Context, ...] = (
    ("bare with label", "SSN: {v}"),
    ("bare json", '{"ssn": "{v}"}'),
)

IP: tuple[Context, ...] = (
    ("db host", "The primary database is at {v}, port 5432; the replica is down."),
    ("nginx access log", '{v} - - [15/Mar/2024:10:22:31 +0000] "GET /api/v1/orders HTTP/1.1" 200 512 "-" "curl/8.4.0"'),
    ("firewall rule", "Allow inbound 443 from {v} only; block everything else."),
    ("hosts file", "{v}    db-primary.internal"),
    ("ssh how-to", "ssh -i ~/.ssh/deploy.pem ubuntu@{v} times out, what should I check?"),
    ("x-forwarded-for", "X-Forwarded-For: {v}"),
    ("incident", "We saw 40k requests per minute from {v} during the incident; is that a bot?"),
    ("kubectl output", "NAME         READY   STATUS    IP\nworker-7d9   1/1     Running   {v}"),
    ("json server", '{"hostname": "build-runner-3", "ip": "{v}", "zone": "eu-central-1a"}'),
)

JWT: tuple[Context, ...] = (
    ("bearer header", "Authorization: Bearer {v}"),
    ("curl", "curl -H 'Authorization: Bearer {v}' https://api.acme-corp.com/v2/orders?limit=20"),
    ("token response", '{"access_token": "{v}", "token_type": "Bearer", "expires_in": 3600}'),
    ("decode request", "Can you decode this token and tell me why the API says it's expired? {v}"),
    ("cookie", "Cookie: session={v}; theme=dark"),
    ("local storage", "localStorage.getItem('id_token') returned {v}"),
    ("env", "API_TOKEN={v}"),
    ("postman", "I'm testing in Postman with this token: {v} but I get 403."),
)

PRIVATE_KEY: tuple[Context, ...] = (
    ("raw paste", "Here's the deploy key, why does ssh say 'invalid format'?\n\n{v}\n"),
    ("service account json", '{"type": "service_account", "project_id": "acme-prod-3141", '
                             '"private_key": "{v_json}", "token_uri": "https://oauth2.googleapis.com/token"}'),
    ("yaml block", "tls:\n  cert: certs/server.crt\n  key: |\n    {v_indent}\n"),
    ("terraform heredoc", 'resource "tls_private_key" "import" {\n  private_key_pem = <<EOF\n{v}\nEOF\n}'),
    ("python string", 'SIGNING_KEY = """{v}"""'),
    ("env one line", 'SSH_PRIVATE_KEY="{v_json}"'),
)

#: Contexts any credential can appear in; ``{env}`` is its usual variable name.
CREDENTIAL_GENERIC: tuple[Context, ...] = (
    (".env paste", "NODE_ENV=production\nPORT=3000\n{env}={v}\nLOG_LEVEL=info\n"),
    ("shell export", "export {env}=\"{v}\""),
    ("python environ", 'os.environ["{env}"] = "{v}"'),
    ("k8s env", "env:\n  - name: {env}\n    value: \"{v}\""),
    ("json config", '{\n  "region": "eu-west-1",\n  "{env}": "{v}",\n  "timeout": 30\n}'),
    ("401 question", "I keep getting 401 Unauthorized with this key, is it expired? {v}"),
    ("docker run", "docker run -e {env}={v} acme/worker:1.4.2"),
    ("github actions", "env:\n  {env}: {v}\nsteps:\n  - run: make deploy"),
    ("compose", "services:\n  api:\n    environment:\n      - {env}={v}"),
)

#: format → (variable name, contexts specific to it).
CREDENTIAL: dict[str, tuple[str, tuple[Context, ...]]] = {
    "aws access key id": ("AWS_ACCESS_KEY_ID", (
        ("aws credentials file", "[default]\naws_access_key_id = {v}\nregion = eu-central-1"),
        ("boto3 call", 'boto3.client("s3", aws_access_key_id="{v}", region_name="us-east-1")'),
        ("sts output", '{"Credentials": {"AccessKeyId": "{v}", "Expiration": "2024-06-01T12:00:00Z"}}'),
        ("cli error", "Why does `aws s3 ls` say InvalidAccessKeyId for {v}? I rotated it yesterday."),
    )),
    "aws secret access key": ("AWS_SECRET_ACCESS_KEY", (
        ("aws credentials file", "[prod]\naws_secret_access_key = {v}\noutput = json"),
        ("shell export", "export AWS_SECRET_ACCESS_KEY={v}"),
        ("sts output", '"SecretAccessKey": "{v}",'),
        ("terraform provider", 'provider "aws" {\n  region     = "us-east-1"\n  secret_key = "{v}"\n}'),
    )),
    "github classic pat": ("GITHUB_TOKEN", (
        ("clone url", "git clone https://{v}@github.com/acme-corp/payments-service.git fails with 403, why?"),
        ("gh login", "echo {v} | gh auth login --with-token"),
        ("api curl", 'curl -H "Authorization: token {v}" https://api.github.com/repos/acme-corp/infra/actions/runs'),
    )),
    "github fine-grained pat": ("GH_TOKEN", (
        ("clone url", "git remote set-url origin https://x-access-token:{v}@github.com/acme-corp/web.git"),
        ("terraform provider", 'provider "github" {\n  owner = "acme-corp"\n  token = "{v}"\n}'),
    )),
    "github oauth token": ("GITHUB_OAUTH_TOKEN", (
        ("hosts.yml", "github.com:\n    oauth_token: {v}\n    user: octo-dev\n    git_protocol: https"),
    )),
    "github app installation token": ("GITHUB_APP_TOKEN", (
        ("api response", '{"token": "{v}", "expires_at": "2024-05-20T18:01:14Z"}'),
    )),
    "github user-to-server token": ("GITHUB_USER_TOKEN", ()),
    "gitlab pat": ("GITLAB_TOKEN", (
        ("api curl", 'curl --header "PRIVATE-TOKEN: {v}" "https://gitlab.example.org/api/v4/projects"'),
        ("pip index", "pip install --index-url https://__token__:{v}@gitlab.acme-corp.com/api/v4/projects/42/packages/pypi/simple acme-utils"),
    )),
    "gitlab runner token": ("CI_RUNNER_TOKEN", (
        ("runner config", '[[runners]]\n  name = "docker-runner-2"\n  url = "https://gitlab.acme-corp.com"\n  token = "{v}"'),
    )),
    "gitlab deploy token": ("DEPLOY_TOKEN", ()),
    "bitbucket app password": ("BITBUCKET_APP_PASSWORD", (
        ("clone url", "git clone https://jdoe:{v}@bitbucket.org/acme/mobile-app.git"),
    )),
    "hugging face token": ("HF_TOKEN", (
        ("cli login", "huggingface-cli login --token {v}"),
        ("python login", 'from huggingface_hub import login\nlogin(token="{v}")'),
        ("from_pretrained", 'AutoModel.from_pretrained("meta-llama/Llama-3.1-8B", token="{v}")'),
    )),
    "openai project key": ("OPENAI_API_KEY", (
        ("client init", 'client = OpenAI(api_key="{v}")\nresp = client.chat.completions.create(model="gpt-4o-mini", messages=msgs)'),
        ("curl", 'curl https://api.openai.com/v1/models -H "Authorization: Bearer {v}"'),
        ("rate limit question", "Why am I hitting 429s on my key {v}? I'm on tier 2."),
    )),
    "openai legacy key": ("OPENAI_API_KEY", (
        ("openai module", 'import openai\nopenai.api_key = "{v}"'),
    )),
    "openai service account key": ("OPENAI_API_KEY", ()),
    "anthropic api key": ("ANTHROPIC_API_KEY", (
        ("client init", 'client = anthropic.Anthropic(api_key="{v}")'),
        ("curl header", 'curl https://api.anthropic.com/v1/messages -H "x-api-key: {v}" -H "anthropic-version: 2023-06-01"'),
    )),
    "anthropic admin key": ("ANTHROPIC_ADMIN_KEY", ()),
    "stripe live secret key": ("STRIPE_SECRET_KEY", (
        ("stripe python", 'import stripe\nstripe.api_key = "{v}"\nstripe.Charge.list(limit=3)'),
        ("curl basic", "curl https://api.stripe.com/v1/charges -u {v}: -d amount=2000 -d currency=usd"),
    )),
    "stripe live secret key (short)": ("STRIPE_API_KEY", (
        ("node init", "const stripe = require('stripe')('{v}');"),
    )),
    "stripe restricted key": ("STRIPE_RESTRICTED_KEY", ()),
    "stripe test secret key": ("STRIPE_SECRET_KEY", (
        ("readme setup", "For local dev set the test key: STRIPE_SECRET_KEY={v} (ask Priya for live)."),
    )),
    "stripe webhook secret": ("STRIPE_WEBHOOK_SECRET", (
        ("construct event", "event = stripe.Webhook.construct_event(payload, sig_header, '{v}')"),
    )),
    "square access token": ("SQUARE_ACCESS_TOKEN", (
        ("curl", "curl https://connect.squareup.com/v2/locations -H 'Authorization: Bearer {v}'"),
    )),
    "square legacy access token": ("SQUARE_ACCESS_TOKEN", ()),
    "square oauth secret": ("SQUARE_APPLICATION_SECRET", ()),
    "shopify admin token": ("SHOPIFY_ACCESS_TOKEN", (
        ("api header", "curl -H 'X-Shopify-Access-Token: {v}' https://acme-store.myshopify.com/admin/api/2024-04/orders.json"),
    )),
    "shopify shared secret": ("SHOPIFY_API_SECRET", ()),
    "shopify custom app token": ("SHOPIFY_TOKEN", ()),
    "slack bot token": ("SLACK_BOT_TOKEN", (
        ("bolt app", 'app = App(token="{v}", signing_secret=os.environ["SLACK_SIGNING_SECRET"])'),
        ("curl", "curl -H 'Authorization: Bearer {v}' https://slack.com/api/conversations.list"),
    )),
    "slack user token": ("SLACK_USER_TOKEN", ()),
    "slack app token": ("SLACK_APP_TOKEN", (
        ("socket mode", 'SocketModeHandler(app, "{v}").start()'),
    )),
    "slack webhook url": ("SLACK_WEBHOOK_URL", (
        ("curl post", "curl -X POST -H 'Content-type: application/json' --data '{\"text\":\"deploy done\"}' {v}"),
        ("alertmanager", "receivers:\n  - name: oncall\n    slack_configs:\n      - api_url: {v}\n        channel: '#alerts'"),
    )),
    "discord bot token": ("DISCORD_TOKEN", (
        ("discord.py", "client.run('{v}')"),
    )),
    "discord webhook url": ("DISCORD_WEBHOOK", (
        ("python post", 'requests.post("{v}", json={"content": "build failed"})'),
    )),
    "telegram bot token": ("TELEGRAM_BOT_TOKEN", (
        ("api url", "curl https://api.telegram.org/bot{v}/sendMessage -d chat_id=-1001 -d text=hi"),
        ("python bot", 'bot = telebot.TeleBot("{v}")'),
    )),
    "twilio api key": ("TWILIO_API_KEY", (
        ("client init", "client = Client('{v}', api_secret, account_sid)"),
    )),
    "twilio auth token": ("TWILIO_AUTH_TOKEN", (
        ("settings", "TWILIO_ACCOUNT_SID = env('TWILIO_ACCOUNT_SID')\nTWILIO_AUTH_TOKEN = '{v}'"),
    )),
    "sendgrid api key": ("SENDGRID_API_KEY", (
        ("python client", "sg = SendGridAPIClient('{v}')"),
    )),
    "mailgun api key": ("MAILGUN_API_KEY", (
        ("curl", "curl -s --user 'api:{v}' https://api.mailgun.net/v3/mg.acme-corp.com/messages"),
    )),
    "mailchimp api key": ("MAILCHIMP_API_KEY", ()),
    "npm token": ("NPM_TOKEN", (
        (".npmrc", "//registry.npmjs.org/:_authToken={v}\n@acme:registry=https://registry.npmjs.org/"),
    )),
    "pypi token": ("TWINE_PASSWORD", (
        (".pypirc", "[pypi]\n  username = __token__\n  password = {v}"),
    )),
    "docker hub pat": ("DOCKERHUB_TOKEN", (
        ("docker login", "docker login -u acmebuild -p {v}"),
    )),
    "google api key": ("GOOGLE_API_KEY", (
        ("maps url", "https://maps.googleapis.com/maps/api/geocode/json?address=Berlin&key={v}"),
        ("firebase config", "const firebaseConfig = {\n  apiKey: \"{v}\",\n  authDomain: \"acme-app.firebaseapp.com\"\n};"),
    )),
    "google oauth client secret": ("GOOGLE_CLIENT_SECRET", (
        ("client secret json", '{"web": {"client_id": "12345-abc.apps.googleusercontent.com", "client_secret": "{v}"}}'),
    )),
    "azure storage account key": ("AZURE_STORAGE_KEY", (
        ("connection string", "DefaultEndpointsProtocol=https;AccountName=acmeprodlogs;AccountKey={v};EndpointSuffix=core.windows.net"),
    )),
    "azure ad client secret": ("AZURE_CLIENT_SECRET", ()),
    "digitalocean token": ("DIGITALOCEAN_TOKEN", (
        ("doctl", "doctl auth init --access-token {v}"),
    )),
    "databricks token": ("DATABRICKS_TOKEN", (
        ("databrickscfg", "[DEFAULT]\nhost = https://adb-1234567890123456.7.azuredatabricks.net\ntoken = {v}"),
    )),
    "atlassian api token": ("JIRA_API_TOKEN", (
        ("jira python", "jira = JIRA(server='https://acme.atlassian.net', basic_auth=('ops-bot', '{v}'))"),
    )),
    "new relic user key": ("NEW_RELIC_API_KEY", ()),
    "datadog api key": ("DD_API_KEY", (
        ("agent yaml", "api_key: {v}\nsite: datadoghq.eu\nlogs_enabled: true"),
    )),
    "hashicorp vault token": ("VAULT_TOKEN", (
        ("vault login", "vault login {v}"),
    )),
    "linear api key": ("LINEAR_API_KEY", ()),
    "postman api key": ("POSTMAN_API_KEY", (
        ("curl", "curl https://api.getpostman.com/collections -H 'X-Api-Key: {v}'"),
    )),
    "grafana service account token": ("GRAFANA_TOKEN", ()),
    "django secret key": ("SECRET_KEY", (
        ("settings.py", "DEBUG = False\nSECRET_KEY = '{v}'\nALLOWED_HOSTS = ['acme-corp.com']"),
    )),
    "jwt signing secret": ("JWT_SECRET", (
        ("jwt sign", "token = jwt.encode(payload, '{v}', algorithm='HS256')"),
    )),
    "generic api key": ("API_KEY", (
        ("header", "X-API-Key: {v}"),
        ("yaml", "weather_service:\n  base_url: https://api.weatherly.io\n  api_key: {v}"),
        ("query string", "GET https://api.geodata.io/v1/lookup?ip=me&api_key={v}"),
    )),
    "generic bearer token": ("ACCESS_TOKEN", (
        ("bearer header", "Authorization: Bearer {v}"),
        ("requests call", 'requests.get(url, headers={"Authorization": "Bearer {v}"})'),
    )),
    "oauth client secret": ("CLIENT_SECRET", (
        ("token request", "curl -X POST https://login.acme-corp.com/oauth/token -d grant_type=client_credentials "
                          "-d client_id=reporting-svc -d client_secret={v}"),
    )),
}

#: Database and service URLs carrying a password; ``{pw}`` is the password.
DB_URLS: dict[str, str] = {
    "postgres url": "postgresql://app_user:{pw}@orders-db.cluster-c8x2.eu-central-1.rds.amazonaws.com:5432/orders",
    "postgres url (short scheme)": "postgres://admin:{pw}@10.0.4.12:5432/analytics",
    "mysql url": "mysql://root:{pw}@mysql.internal:3306/shop",
    "mongodb+srv url": "mongodb+srv://svc-reporting:{pw}@cluster0.x7kq2.mongodb.net/prod?retryWrites=true&w=majority",
    "redis url": "redis://default:{pw}@redis-12345.c1.us-east-1-2.ec2.cloud.redislabs.com:12345/0",
    "amqp url": "amqp://worker:{pw}@rabbitmq.prod.svc:5672/%2F",
    "https basic auth url": "https://deploy:{pw}@nexus.acme-corp.com/repository/pypi-internal/simple",
    "sqlalchemy url": "mssql+pyodbc://etl:{pw}@sqlprod01.acme.local/warehouse?driver=ODBC+Driver+18+for+SQL+Server",
}

DB_URL_CONTEXTS: tuple[Context, ...] = (
    (".env", "DATABASE_URL={v}"),
    ("connection error", "Getting 'connection refused' with {v} - is the port wrong?"),
    ("python engine", 'engine = create_engine("{v}")'),
    ("settings yaml", "database:\n  url: {v}\n  pool_size: 10"),
)

#: Passwords by assignment context; the value is the password.
PASSWORD: tuple[Context, ...] = (
    ("python assignment", 'DB_HOST = "db.internal"\nDB_USER = "billing"\nDB_PASSWORD = "{v}"'),
    (".env", "POSTGRES_USER=app\nPOSTGRES_PASSWORD={v}\nPOSTGRES_DB=app"),
    ("json", '{"username": "svc-backup", "password": "{v}", "host": "nas01"}'),
    ("spring properties", "spring.datasource.username=orders\nspring.datasource.password={v}"),
    ("pgpassword", "PGPASSWORD='{v}' psql -h db.internal -U report -d sales -c 'select 1'"),
    ("cli flag", "mysqldump --user=backup --password={v} shop > shop.sql"),
    ("ansible vars", "ansible_user: deploy\nansible_become_pass: {v}"),
    ("redis conf", "bind 0.0.0.0\nrequirepass {v}"),
    ("prose", "The admin password for the staging Grafana is {v} - please don't share it."),
    ("wifi", "Guest wifi: AcmeGuest, password: {v}"),
    ("yaml secret", "smtp:\n  host: smtp.office365.com\n  user: noreply-bot\n  password: {v}"),
)

#: Human-chosen passwords are in a share of the password cases (the rest are generated).
PASSWORD_STYLES = ("generated", "generated symbols", "generated", "human")

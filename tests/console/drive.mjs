// Drives the Bastion web console in Debian's Chromium (playwright-core, no browser download) for
// tests/e2e/test_console.py. Reads one JSON plan on stdin, prints one JSON report on stdout.
//
// Plan: {base, outsider_key, approver_key, approval_id, text, shots}
// Every wait is bounded (TIMEOUT_MS); a failed expectation exits non-zero with the reason on stderr.
import { createRequire } from "node:module";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// The pinned peers live in tests/node (scripts/install-test-peers.sh), not beside this script.
const { chromium } = createRequire(new URL("../node/package.json", import.meta.url))("playwright-core");
const TIMEOUT_MS = 15000;
const plan = JSON.parse(readFileSync(0, "utf8"));
const report = {};
const profile = mkdtempSync(join(tmpdir(), "bastion-console-chromium-"));

const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
  viewport: { width: 1280, height: 800 },
  timeout: TIMEOUT_MS,
});
context.setDefaultTimeout(TIMEOUT_MS);

async function signIn(page, key) {
  await page.goto(`${plan.base}/console/approvals`);
  await page.waitForURL(/\/console\/login/);  // not signed in: sent to the sign-in form
  await page.fill("#token", key);
  await Promise.all([page.waitForURL(/\/console\/approvals$/), page.click("form.login button")]);
}

async function signOut(page) {
  await Promise.all([page.waitForURL(/\/console\/login/), page.click("form.who button")]);
}

try {
  const page = context.pages()[0] ?? await context.newPage();

  // 1. A reviewer outside the approver group: sees the call, is refused when approving it.
  await page.goto(`${plan.base}/console/`);
  await page.waitForURL(/\/console\/login/);
  await page.screenshot({ path: `${plan.shots}/console-login.png`, fullPage: true });
  await signIn(page, plan.outsider_key);
  await page.goto(`${plan.base}/console/approvals/${plan.approval_id}`);
  const [refusal] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/approve") && r.request().method() === "POST"),
    page.click("button.approve"),
  ]);
  report.outsider_status = refusal.status();
  report.outsider_message = (await page.textContent("p.banner.error")).trim();
  await page.screenshot({ path: `${plan.shots}/console-refused.png`, fullPage: true });
  await signOut(page);
  report.cookies_after_sign_out = (await context.cookies()).map((c) => c.name);

  // 2. The approver: the pending list shows the call (escaped), the approval page approves it.
  await signIn(page, plan.approver_key);
  const row = page.locator("tbody tr", { hasText: plan.approval_id });
  report.row_text = (await row.innerText()).replace(/\s+/g, " ");
  report.markup_in_arguments = await row.locator("code.args *").count();
  report.injected_script_ran = await page.evaluate(() => window.pwned === true);
  const cookie = (await context.cookies()).find((c) => c.name === "bastion_console_token");
  report.cookie = { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, path: cookie.path };
  await page.screenshot({ path: `${plan.shots}/console-approvals.png`, fullPage: true });
  await Promise.all([page.waitForURL(new RegExp(`/approvals/${plan.approval_id}$`)),
                     page.click(`a[href$="/approvals/${plan.approval_id}"]`)]);
  report.deny_reason_required = await page.locator("#deny-reason").evaluate((el) => el.required);
  await page.screenshot({ path: `${plan.shots}/console-approval.png`, fullPage: true });
  await page.fill("#approve-reason", "looks fine, ticket 4711");
  await Promise.all([page.waitForURL(/notice=approve/), page.click("button.approve")]);
  report.notice = (await page.textContent("p.banner.notice")).trim();
  report.state_after = (await page.textContent("span.state")).trim();

  // 3. Audit search: the call's response record, then its whole interaction.
  await page.goto(`${plan.base}/console/audit`);
  await page.fill("input[name=subject]", "agent");
  await page.fill("input[name=tool]", "echo");
  await page.selectOption("select[name=kind]", "response");
  await Promise.all([page.waitForURL(/kind=response/), page.click("form.search button")]);
  report.audit_rows = await page.locator("tbody tr").count();
  report.audit_first_row = (await page.locator("tbody tr").first().innerText()).replace(/\s+/g, " ");
  await page.screenshot({ path: `${plan.shots}/console-audit.png`, fullPage: true });
  await Promise.all([page.waitForURL(/\/audit\/interaction/), page.locator("tbody tr a").first().click()]);
  report.interaction_kinds = await page.locator("section.record h2").evaluateAll(
    (hs) => hs.map((h) => h.childNodes[0].textContent.trim()));
  report.interaction_text = await page.locator("main").innerText();
  await page.screenshot({ path: `${plan.shots}/console-interaction.png`, fullPage: true });
} catch (err) {
  console.error(String(err && err.stack || err));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report) + "\n");

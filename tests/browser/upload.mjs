// Opens the page served by `dermcam demo`, uploads a sample image through the form and checks
// the predicted class shown equals what `dermcam classify` says for the same file.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";

const [base, bin, image, outDir] = process.argv.slice(2);
const expected = JSON.parse(execFileSync(bin, ["classify", "--json", image]).toString().trim().split("\n")[0]).headline;
mkdirSync(outDir, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  await page.goto(base + "/");
  const disclaimer = await page.textContent("#disclaimer");
  if (!disclaimer.includes("Not a diagnosis")) throw new Error("disclaimer missing: " + disclaimer);
  // The live panel shows the demo's own prediction within a few seconds.
  await page.waitForFunction(() => {
    const t = document.getElementById("live-label")?.textContent || "";
    return t && t !== "Connecting..." && t !== "Starting";
  }, null, { timeout: 15000 });
  await page.screenshot({ path: outDir + "/index.png", fullPage: true });
  await page.setInputFiles("input[type=file]", image);
  await Promise.all([page.waitForNavigation(), page.click("input[type=submit]")]);
  const shown = (await page.textContent("#prediction")).trim();
  await page.screenshot({ path: outDir + "/result.png", fullPage: true });
  console.log(`browser shows "${shown}", dermcam classify says "${expected}"`);
  if (shown !== expected) throw new Error(`expected "${expected}", page shows "${shown}"`);
  // A non-image upload is refused with a clear message.
  await page.goto(base + "/");
  await page.setInputFiles("input[type=file]", { name: "notes.jpg", mimeType: "image/jpeg", buffer: Buffer.from("not an image") });
  await Promise.all([page.waitForNavigation(), page.click("input[type=submit]")]);
  const err = await page.textContent("#error");
  if (!err.includes("only JPEG and PNG")) throw new Error("bad upload not explained: " + err);
  console.log("browser test passed; screenshots in " + outDir);
} finally {
  await browser.close();
}

#!/usr/bin/env python3
"""Generate the deterministic sample corpus of "Quillstack", a fictional B2B project-management SaaS.

The corpus feeds tuneforge's demos and tests, as the data of two models: `support/` (the customer-support
assistant: KB articles, support Q&A, chats, a later ticket export with bad lines, junk, a binary file, and its
golden set) and `policy/` (the internal policy and runbook assistant: runbooks, policies, and its golden set);
beside them a manifest of every planted PII value, the canary secrets and a machine-readable list of what was
planted. Every fact lives once in KB_SOURCE; Q&A pairs, chats, tickets and golden answers are
rendered from those facts, so they never contradict the KB.

Usage: .venv/bin/python scripts/generate_sample_corpus.py [--out DIR] [--seed N]
Only the standard library and Faker are used; the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from faker import Faker

from sample_documents import HANDBOOK_GOLDEN, KNOWLEDGE_GOLDEN, UNANSWERABLE_GOLDEN, UNANSWERED, documents

SEED = 20261101
REPO_ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PROMPT = "You are Quillstack's support assistant."

# One "## tag | title | intro" line per KB article, then one "question | alt question | answer" line
# per fact. The first question feeds support_qa.csv, the alternative feeds chats and tickets.
KB_SOURCE = """
## billing | Quillstack plans at a glance | Quillstack offers four plans, Free, Team, Business and Enterprise, and you can change plans at any time from Settings > Billing.
How many boards can I create on the Free plan? | Is there a board limit on the free tier? | The Free plan allows 3 boards per workspace and up to 5 members, with 1 GB of file storage. Team and higher plans include unlimited boards.
How much does the Team plan cost? | What's the price of Team per user? | The Team plan costs $8 per user per month when billed annually, or $10 per user per month when billed monthly.
What does the Business plan add over Team? | Which features do I get if I move from Team to Business? | The Business plan costs $16 per user per month billed annually and adds SAML single sign-on, the audit log and advanced permissions on top of everything in Team.
## billing | Starting a free trial | Every new workspace can try the paid features of Quillstack before committing to a plan.
How long is the Quillstack free trial? | Can I test Business features before paying? | New workspaces get a 14-day trial of the Business plan, and no credit card is required to start it.
What happens when my trial ends? | If I don't pay after the trial, do I lose my boards? | When the trial ends without a purchase, the workspace moves to the Free plan. Nothing is deleted, but boards beyond the first 3 are archived and stay read-only until you upgrade.
## billing | Invoices and receipts | Quillstack issues an invoice for every charge on your subscription.
Where can I download my invoices? | How do I get a PDF of last month's invoice? | Invoices are available as PDFs under Settings > Billing > Invoices, and a copy is emailed to the billing contact when each charge is made.
When are monthly invoices generated? | What day of the month am I billed? | Monthly subscriptions are invoiced on the same calendar day each month as the original purchase, and annual subscriptions are invoiced once a year on the renewal date.
Can I add our PO number to invoices? | Is it possible to put a purchase order number on the invoice? | Yes. Billing admins can add a PO number and a custom billing address under Settings > Billing > Invoice details, and both appear on all future invoices.
## billing | Accepted payment methods | Quillstack accepts several payment methods depending on the plan and the size of your subscription.
Which credit cards do you accept? | Can I pay with American Express? | Quillstack accepts Visa, Mastercard and American Express cards on all paid plans.
Can we pay by bank transfer instead of card? | Do you support paying by wire transfer? | Annual plans with 25 seats or more can pay by bank transfer against an invoice, with 30-day payment terms.
Which currencies can I be billed in? | Can I pay in euros? | Subscriptions can be billed in US dollars, euros or British pounds. The currency is set at purchase and can only be changed at renewal.
## billing | Failed payments and read-only workspaces | If a card payment fails, Quillstack retries it automatically before restricting the workspace.
What happens if my card payment fails? | My card was declined, will my workspace be shut down? | A failed payment is retried 3 times over 10 days, and the billing contact is emailed after each attempt. If every retry fails, the workspace becomes read-only until the balance is paid, and no data is deleted.
How do I update the card on file? | Where do I change my payment card? | Owners and billing admins can replace the card under Settings > Billing > Payment method, and any outstanding balance is charged to the new card immediately.
## billing | Adding and removing seats | Paid plans are billed per seat, and the number of seats can change during a billing cycle.
Are we charged right away when we add users mid-cycle? | How does billing work if I add seats in the middle of the month? | Seats added mid-cycle are prorated for the remaining days, and the charge appears on your next invoice.
Do we get money back if we remove seats? | If I remove five users today, is the difference refunded? | Removed seats stay billed until the end of the current billing period, and the lower seat count applies from the next renewal. Partial periods are not refunded.
## billing | Refunds for annual plans | Quillstack offers a money-back window for annual subscriptions.
Can I get a refund on an annual plan? | We bought a yearly plan by mistake, is a refund possible? | Annual plans can be refunded in full within 30 days of purchase. After 30 days annual plans are non-refundable, but you can turn off auto-renewal at any time.
How do I request a refund? | Who do I contact to get my money back? | Workspace Owners can request a refund under Settings > Billing > Request refund, and refunds reach the original payment method within 5 to 10 business days.
## billing | VAT, sales tax and tax IDs | Taxes are calculated from the billing address of the workspace.
How do I add our VAT number? | Where do I enter the EU VAT ID? | Enter your VAT ID under Settings > Billing > Tax information. For a valid EU VAT ID the reverse-charge mechanism applies, and VAT is no longer added to future invoices; invoices already issued are not changed.
Do you charge sales tax in the US? | We are tax-exempt in the US, how do we stop being charged sales tax? | US customers are charged sales tax in states where Quillstack is registered, and tax-exempt organisations can upload an exemption certificate under Settings > Billing > Tax information.
## billing | Discounts for nonprofits and education | Quillstack supports nonprofits and schools with discounted pricing.
Do you offer a nonprofit discount? | Is there special pricing for charities? | Registered nonprofits receive a 50% discount on the Team and Business plans after verification, which takes up to 5 business days.
Is Quillstack free for schools? | Do teachers get Quillstack for free? | Accredited schools and universities can use the Team plan free of charge for up to 100 members.
## billing | Changing the billing contact | The billing contact receives invoices, receipts and payment alerts.
How do I change the email that receives invoices? | Our finance team changed, how do we update the invoice recipient? | Owners and billing admins can change the billing contact under Settings > Billing > Billing contact, and up to 3 email addresses can receive billing emails.
Who can see billing information? | Can regular members view our invoices? | Only the workspace Owner and members with the Billing admin role can view invoices and payment details; Admins and Members cannot.
## billing | Cancelling a subscription | You can cancel a paid subscription at any time without contacting support.
How do I cancel my subscription? | What are the steps to stop paying for Quillstack? | Owners can cancel under Settings > Billing > Cancel plan. The paid plan stays active until the end of the current billing period, and the workspace then moves to the Free plan.
Is my data deleted when I cancel? | If we downgrade to free, do we lose everything? | Cancelling does not delete any data. On the Free plan, boards beyond the first 3 are archived as read-only and can be restored by upgrading again.
## workspaces | Creating and naming a workspace | A workspace is the home for your team's boards, members and settings.
How many workspaces can I create? | Is there a limit on workspaces per account? | One account can own up to 10 workspaces and can be a member of any number of workspaces.
Can I change my workspace URL? | How do I rename the workspace address? | Owners can change the workspace URL under Settings > General. The URL can be changed once every 30 days, and the old URL redirects to the new one for 90 days.
## workspaces | Transferring workspace ownership | Every workspace has exactly one Owner, who controls billing and can delete the workspace.
How do I transfer ownership of a workspace? | The current owner is leaving the company, how do we hand over the workspace? | The current Owner can transfer ownership under Settings > Members by choosing Make owner next to an Admin. The new Owner must accept within 7 days, otherwise the request expires.
What if the owner has left and can't transfer ownership? | Our owner's account is gone, how do we recover the workspace? | If the Owner is unreachable, an Admin can open a recovery request with support. Quillstack verifies the company domain and reassigns ownership within 5 business days.
## workspaces | Deleting a workspace | Deleting a workspace removes all of its boards, cards, files and members.
How do I delete a workspace? | Can I remove a workspace we no longer use? | Only the Owner can delete a workspace, under Settings > General > Delete workspace, after cancelling any paid plan.
Can a deleted workspace be restored? | We deleted our workspace by accident, can you bring it back? | A deleted workspace can be restored by support for 30 days after deletion. After 30 days it is permanently purged and cannot be recovered.
## workspaces | Workspace storage limits | Files attached to cards count toward the storage allowance of your workspace.
How much storage does each plan include? | What's the storage quota on Team? | The Free plan includes 1 GB of storage, Team includes 100 GB per workspace, and Business and Enterprise include 1 TB per workspace.
What happens when we run out of storage? | We hit our storage limit, what now? | When a workspace reaches its storage limit, new uploads are blocked but existing files stay available. Deleting files or upgrading frees up space immediately.
## workspaces | Guests and external collaborators | Guests let you work with clients and contractors without giving them access to the whole workspace.
Do guests count as paid seats? | Do I pay for external guests? | Guests are free and do not use a paid seat. Each workspace can have up to 50 guests.
What can a guest see? | Can guests browse all our boards? | Guests can only see the boards they are explicitly invited to, and they cannot create boards or view the member directory.
## workspaces | Inviting members | Admins can invite colleagues by email or with an invite link.
How long is an invitation valid? | My invite email expired, how long do they last? | Invitations expire after 7 days. Admins can resend an expired invitation under Settings > Members > Pending.
Can I let anyone from my company join automatically? | Is there domain-based auto-join? | Yes. Admins can turn on domain capture so anyone with a verified company email domain can join without an invitation; on paid plans each new member uses a seat.
## boards | Board limits and sizes | Boards are flexible, but a few limits keep them fast for everyone.
How many cards can a board hold? | Is there a maximum number of cards per board? | A single board can hold up to 10,000 active cards, and archived cards do not count toward this limit.
How many columns can a board have? | Is there a limit to lists on a board? | A board can have up to 100 columns, and each column can hold up to 1,000 cards.
## boards | Board templates | Templates help you start new boards with a proven structure.
Are there ready-made board templates? | Do you have templates for sprints or roadmaps? | Quillstack includes 40 built-in templates, such as Sprint planning, Product roadmap and Content calendar.
Can I create my own template? | How do I save a board as a template? | Any board can be saved as a template from Board menu > Save as template, and workspace templates are available to every member of the workspace.
## boards | Archiving and restoring boards | Archiving hides a board without deleting its contents.
Do archived boards count toward the Free plan limit? | If I archive a board, does it free up a slot on Free? | Archived boards do not count toward the 3-board limit of the Free plan and can be restored at any time from the Archive page.
What is the difference between archiving and deleting a board? | Should I archive or delete an old board? | Archived boards are kept indefinitely and can be restored with all their cards. Deleted boards go to the Trash, where they can be restored for 30 days before they are permanently removed.
## boards | Board visibility settings | Each board has a visibility setting that controls who can find and open it.
What visibility options does a board have? | Can boards be private? | Boards can be Private (only invited members), Workspace (every member of the workspace) or Public link (read-only access for anyone with the link).
Can I turn off public links for the whole workspace? | How do I stop people sharing boards publicly? | Admins on Business and Enterprise can disable public links under Settings > Security, which immediately deactivates every existing public link.
## boards | Card attachments | You can attach files to any card by dragging them onto it.
What is the maximum attachment size? | How big can an uploaded file be? | Each attachment can be up to 250 MB on paid plans and up to 10 MB on the Free plan.
Which file types can be previewed? | Can I preview PDFs on a card? | Images, PDFs, videos and Office documents can be previewed directly on the card, and other file types are available as downloads.
## boards | Custom fields | Custom fields add structured data such as estimates, priorities or dates to cards.
How many custom fields can I add? | Is there a limit on custom fields per board? | Custom fields are available on Team and above. Team boards can have up to 10 custom fields, and Business and Enterprise boards up to 50.
What types of custom fields are there? | Can a custom field be a dropdown? | Custom fields can be text, number, date, checkbox, dropdown or person fields.
## boards | Automations | Automations move cards, assign people and post updates without manual work.
How many automation runs do we get? | Is there a limit on automation executions? | The Free plan includes 100 automation runs per month, Team includes 1,000 automation runs per month, Business includes 10,000, and Enterprise has unlimited runs.
What happens when we hit the automation limit? | Automations stopped running this month, why? | When the monthly limit is reached, automations pause until the counter resets on the first day of the next calendar month. Admins get an email at 80% and 100% of the limit.
## boards | Timeline and dependencies | The Timeline view shows cards on a calendar together with their dependencies.
Is the timeline view available on Free? | Can free users use the Gantt view? | The Timeline view and card dependencies are available on the Team plan and above, not on the Free plan.
How do card dependencies work? | Can I make one card block another? | A card can be marked as blocked by up to 20 other cards. When a blocking card's dates move, Quillstack shifts the dependent cards automatically if auto-scheduling is on.
## boards | Recurring cards | Recurring cards recreate routine tasks on a schedule.
Can cards repeat automatically? | How do I make a weekly task? | Any card can be set to recur daily, weekly, monthly or on a custom schedule, and each new copy is created at 00:00 in the workspace time zone.
Do recurring cards copy checklists? | When a card repeats, are the checklist items reset? | New copies of a recurring card include the description, checklist and labels, with every checklist item unchecked; comments and attachments are not copied.
## boards | Search and Smart views | Search finds cards, comments and attachments across every board you can access.
Does search look inside attachments? | Can I search text in PDFs? | Search indexes the text of PDF, DOCX and TXT attachments up to 20 MB, usually within a few minutes of upload.
Can I save a search? | Is there a way to save a filter? | Searches and filters can be saved as Smart views, and up to 25 Smart views can be pinned to the sidebar.
## boards | Moving and copying cards | Cards can be moved or copied to any board you can edit.
Can I move a card to another workspace? | How do I transfer cards between workspaces? | Cards can be moved between boards in the same workspace but not between workspaces. To move work across workspaces, export the board to CSV and import it in the other workspace.
What is kept when I copy a card? | Does copying a card keep comments? | Copying a card keeps its title, description, checklist, labels and attachments, while comments and activity history stay on the original card.
## permissions | Roles and permissions | Quillstack uses roles to control what each person can do in a workspace.
What roles are there in Quillstack? | What's the difference between Admin and Member? | Workspaces have five roles: Owner, Admin, Billing admin, Member and Guest. Admins manage members and settings, Members create and edit boards, and Guests only access boards shared with them.
Can I create custom roles? | Is it possible to define our own permission set? | Custom roles are available on the Enterprise plan only and are built from 30 individual permissions.
## permissions | Removing a member | When someone leaves your team, remove them so their seat can be reused.
What happens to a removed member's cards? | If I remove a user, do their tasks disappear? | A removed member's cards, comments and files stay in the workspace. Their open assignments move to each board's owner, and their seat can be given to someone else immediately.
Can a removed member be added back? | We removed someone by mistake, can we restore them? | Yes. Re-inviting a removed member within 30 days restores their previous board memberships.
## permissions | Advanced board permissions | Advanced permissions let you restrict who can edit specific boards and columns.
Can I make a board read-only for some people? | How do I give view-only access? | On Business and Enterprise, board admins can give each person Viewer, Commenter or Editor access to a board.
Can I lock a column so only certain people move cards into it? | Is it possible to restrict a column like Done? | Business and Enterprise boards support column restrictions, so only the people or groups you choose can move cards into a restricted column.
## permissions | Member groups | Groups let you manage access for whole teams at once.
How do I create a group of members? | Can I share a board with a whole team? | Admins can create groups under Settings > Groups and share boards with a group instead of individuals; Business workspaces can have up to 100 groups.
Can groups sync from our identity provider? | Do Okta groups map to Quillstack groups? | On the Enterprise plan, groups can be synced from your identity provider through SCIM, and synced groups cannot be edited manually in Quillstack.
## security | Setting up SAML single sign-on | SAML single sign-on (SSO) lets your team sign in through your identity provider.
Which plans include SSO? | Do we need Enterprise for SAML? | SAML single sign-on is included in the Business and Enterprise plans.
Which identity providers are supported? | Does SSO work with Okta and Azure AD? | Quillstack supports any SAML 2.0 identity provider and has step-by-step guides for Okta, Microsoft Entra ID (Azure AD), Google Workspace and OneLogin.
Do we need to verify our domain for SSO? | Why does SSO setup ask for a DNS record? | Before enabling SSO you must verify your email domain by adding a TXT record to your DNS, and verification usually completes within an hour.
## security | Enforcing SSO | Once SSO works, admins can require it for every member of the workspace.
What happens to passwords when we enforce SSO? | After enforcing SSO, can people still log in with a password? | When SSO is enforced, password sign-in is disabled for all members except the Owner, who keeps a break-glass password login in case the identity provider is unavailable.
Do guests have to use SSO? | How do external guests sign in if SSO is enforced? | Guests are exempt from SSO enforcement and keep signing in with email and password plus two-factor authentication.
## security | SCIM user provisioning | SCIM keeps your Quillstack members in sync with your identity provider.
Is SCIM provisioning supported? | Can Okta create users automatically? | SCIM 2.0 provisioning is available on the Enterprise plan and works with Okta, Microsoft Entra ID and OneLogin.
How fast is a deprovisioned user removed? | When we disable someone in Okta, when do they lose access? | When a user is deactivated in your identity provider, SCIM deactivates them in Quillstack within 5 minutes and ends all of their active sessions.
## security | Two-factor authentication | Two-factor authentication (2FA) protects accounts even if a password is stolen.
What 2FA methods are supported? | Can I use SMS codes for 2FA? | Quillstack supports authenticator apps (TOTP) and hardware security keys (WebAuthn). SMS codes are not supported.
Can admins require 2FA for everyone? | How do I force two-factor for the whole team? | Admins can require 2FA under Settings > Security, and members without 2FA must set it up at their next sign-in.
What if I lose my 2FA device? | I lost my phone with the authenticator app, how do I get in? | Use one of the 10 one-time recovery codes created when you enabled 2FA. If you have no recovery codes left, a workspace Admin can reset your 2FA after verifying your identity.
## security | Password requirements and lockouts | Quillstack enforces strong passwords for accounts that do not use SSO.
What are the password requirements? | How long does my password need to be? | Passwords must be at least 12 characters long and are checked against a list of known breached passwords.
Why is my account locked? | I got locked out after typing my password wrong, what now? | After 10 failed sign-in attempts the account is locked for 15 minutes. You can wait or reset your password, and the reset link is valid for 1 hour.
## security | Session management | Sessions keep you signed in across browsers and devices.
How long do sessions last? | When will I be logged out automatically? | Sessions expire after 30 days of inactivity by default, and Enterprise admins can set an idle timeout between 15 minutes and 30 days.
Can I sign out of all devices? | How do I log out everywhere? | Under Profile > Security > Active sessions you can see every signed-in device and sign out of all of them at once.
## security | IP allowlisting | IP allowlisting restricts access to your workspace to approved networks.
Can we restrict access to our office IP addresses? | Is there an IP allowlist feature? | IP allowlisting is available on the Enterprise plan. Admins can add up to 100 IP ranges in CIDR notation under Settings > Security > Network.
Does the IP allowlist apply to the API and mobile app? | Will the allowlist block our API scripts? | The allowlist applies to the web app, the mobile apps and the API, so add the addresses of your servers and VPN before turning it on.
## security | Encryption and data protection | Quillstack protects customer data at rest and in transit.
Is our data encrypted? | How do you encrypt stored data? | All customer data is encrypted at rest with AES-256 and in transit with TLS 1.2 or higher.
Can we bring our own encryption keys? | Do you support customer-managed keys? | Customer-managed encryption keys (BYOK) through AWS KMS are available on the Enterprise plan.
## security | Compliance reports and the DPA | Quillstack is audited by independent third parties every year.
Are you SOC 2 compliant? | Can I get your SOC 2 report? | Quillstack holds a SOC 2 Type II report and ISO 27001 certification, and customers can request the reports from the Trust Center after signing an NDA.
Do you sign a DPA? | Is there a data processing agreement for GDPR? | A GDPR data processing agreement is available on all paid plans and can be signed electronically under Settings > Legal.
## security | Data residency | Enterprise customers can choose where their data is stored.
Can our data be stored in the EU? | Do you have European hosting? | Enterprise workspaces can choose EU data residency (Frankfurt) or US data residency (Virginia) when the workspace is created.
Can we move an existing workspace to the EU region? | We want to migrate our data to Europe, is that possible? | An existing workspace can be migrated to another region once per year. The migration is scheduled with support, and the workspace is read-only for up to 4 hours during the move.
## security | Reporting a security issue | Quillstack welcomes security reports from researchers and customers.
How do I report a vulnerability? | Where do I send a security bug? | Report vulnerabilities through the security page of the Trust Center, and the security team acknowledges every report within 2 business days.
Is penetration testing allowed? | Can we run a pentest against our workspace? | Enterprise customers may run penetration tests against their own workspace after notifying Quillstack at least 10 business days in advance. Testing other customers' data and denial-of-service testing are never allowed.
## api | Creating API tokens | Personal API tokens let scripts and tools act on your behalf.
How long do API tokens last? | Do Quillstack API tokens expire? | API tokens expire after 90 days. Quillstack emails the token owner 7 days before a token expires so it can be rotated in time.
How many API tokens can I have? | Is there a limit on tokens per user? | Each user can have up to 10 active API tokens at a time.
What scopes can a token have? | Can I create a read-only token? | Tokens are created with one or more scopes: read, write or admin. A token with only the read scope can fetch data but cannot change anything.
## api | Revoking and rotating tokens | Rotate tokens regularly and revoke any token that may have been exposed.
How do I revoke a token? | I accidentally pasted my token in a public channel, what should I do? | Revoke the token under Profile > API tokens. Revoked tokens stop working immediately, and you can create a replacement right away.
Do tokens of a removed member keep working? | If an employee leaves, do their API tokens stop? | When a member is removed or deactivated, all of their API tokens are revoked automatically.
## api | API rate limits | Rate limits protect the API from overload and keep it fast for everyone.
What is the API rate limit? | How many requests per minute can I make? | The API allows 100 requests per minute per token, and Enterprise workspaces get 1,000 requests per minute per token.
What happens when I exceed the rate limit? | I'm getting HTTP 429 errors, what do they mean? | Requests over the limit receive HTTP 429 Too Many Requests with a Retry-After header that says how many seconds to wait before retrying.
## api | Pagination | List endpoints of the Quillstack API return their results in pages.
How does pagination work in the API? | How do I get the next page of cards? | List endpoints use cursor-based pagination: pass the next_cursor value from one response as the cursor parameter of the next request.
What is the maximum page size? | How many items can one API call return? | The default page size is 50 items and the maximum is 200, set with the limit parameter.
## api | API versioning | The Quillstack API is versioned by date so integrations do not break unexpectedly.
How do I choose an API version? | Which API version will my request use? | Send the Quillstack-Version header with a date-based version such as 2026-01-15. Requests without the header use the version pinned to your token when it was created.
How long are old API versions supported? | When will my API version be turned off? | Deprecated API versions keep working for 12 months after a newer version is released, and deprecation notices are sent by email and listed in the developer changelog.
## api | OAuth apps | OAuth apps let third-party tools access Quillstack on behalf of users.
How long do OAuth access tokens last? | When does an OAuth token need refreshing? | OAuth access tokens are valid for 1 hour and refresh tokens for 60 days, while authorization codes expire after 10 minutes.
Who can approve OAuth apps? | Can admins block third-party apps? | Admins can require approval for OAuth apps under Settings > Integrations, so members can only authorize apps on the approved list.
## api | Sandbox environment | A sandbox lets developers test integrations without touching real data.
Is there a test environment for the API? | Can I try the API without affecting production? | Every paid workspace can create one sandbox workspace. Sandbox tokens start with qs_test_ and only work against the sandbox.
Does the sandbox keep data forever? | Is sandbox data reset? | Sandbox data is reset every Sunday at 00:00 UTC, and sandbox requests do not count toward production rate limits.
## webhooks | Setting up webhooks | Webhooks send an HTTP POST to your server when something changes in Quillstack.
How many webhooks can a workspace have? | Is there a webhook limit? | Each workspace can register up to 20 webhooks, and each webhook can subscribe to any number of event types.
Which events can trigger a webhook? | What webhook events are available? | Webhooks can subscribe to events such as card.created, card.updated, card.moved, comment.created and board.archived.
## webhooks | Verifying webhook signatures | Every webhook request is signed so you can confirm that it came from Quillstack.
How do I verify that a webhook came from Quillstack? | How are webhook payloads signed? | Each request includes an X-Quillstack-Signature header containing an HMAC-SHA256 of the raw body, computed with the signing secret of the webhook.
Can I rotate the webhook signing secret? | How do I change the webhook secret? | Signing secrets can be rotated in the webhook settings, and the old secret stays valid for 24 hours so you can deploy the new one without dropping events.
## webhooks | Webhook retries and failures | Quillstack retries deliveries that fail and keeps a log of every attempt.
How long does my endpoint have to respond? | What's the webhook timeout? | Your endpoint must return a 2xx status within 10 seconds, and slower responses are treated as failures.
Are failed webhook deliveries retried? | What happens if my server is down when a webhook fires? | Failed deliveries are retried up to 8 times over 24 hours with exponential backoff. A webhook that keeps failing for 72 hours is disabled automatically, and workspace admins are notified by email.
Where can I see webhook delivery history? | Is there a log of webhook attempts? | The delivery log under Settings > Webhooks shows every attempt with its status code for the last 30 days.
## data | Exporting workspace data | Owners and Admins can export a full copy of a workspace at any time.
How do I export all our data? | Can I get a full backup of our workspace? | Owners and Admins can start a full export under Settings > Data > Export. Exports are emailed as a ZIP file within 15 minutes, and the download link stays valid for 7 days.
What format is the export in? | Does the export include attachments? | The export contains JSON and CSV files for boards, cards, comments and members. Attachments are included if you tick Include attachments, which can make the ZIP much larger.
## data | Exporting a single board to CSV | Any member can export the boards they can access.
Can I export just one board? | How do I download one board as a spreadsheet? | Open the board menu and choose Export > CSV. The file downloads immediately and includes every card with its column, assignees, labels and due date.
Are archived cards included in the CSV export? | Does the board export contain archived cards? | Archived cards are left out of the board CSV by default; tick Include archived cards before exporting to add them.
## data | Importing from other tools | Quillstack can import your existing projects from other tools.
Can I import from Trello or Jira? | How do I migrate from Asana? | Quillstack imports boards from Trello, Asana and Jira, as well as CSV files up to 50 MB, under Settings > Data > Import.
Are attachments imported from Trello? | Will my Trello attachments come over? | Trello and Asana imports bring over cards, checklists, labels, comments and attachments. Jira imports bring over issues, comments and attachments but not workflows.
## data | Backups and restores | Quillstack backs up all workspace data automatically.
How often does Quillstack back up data? | Do you keep backups of our boards? | Quillstack takes encrypted backups every 6 hours and keeps them for 35 days.
Can you restore a single board from backup? | We messed up a board, can you roll it back to yesterday? | On Business and Enterprise, support can restore an individual board to any backup point from the last 35 days. The restored board is added as a copy, so current data is never overwritten.
## data | Data retention after deletion | Quillstack keeps deleted data only as long as necessary.
How long do you keep data after we delete it? | When is deleted data really gone? | Deleted cards and boards stay in the Trash for 30 days. After they are purged from the Trash, they are also removed from backups within 35 days.
What happens to our data if we close our workspace? | If we delete our workspace, how long do you keep the data? | A deleted workspace is kept for 30 days so it can be restored, then it is permanently purged and removed from backups within a further 35 days.
## data | GDPR data subject requests | Quillstack helps customers respond to data subject requests.
How do we handle a GDPR access request? | A user asked for all their personal data, how do we get it? | Admins can export one member's personal data under Settings > Members > Export personal data, and the file is ready within 24 hours.
How fast does Quillstack handle deletion requests? | How long does it take to erase a person's data? | Quillstack completes verified personal data deletion requests within 30 days, as the GDPR requires.
## audit | The audit log | The audit log records security-relevant activity in your workspace.
Which plans have an audit log? | Is the audit log available on Team? | The audit log is available on the Business and Enterprise plans.
How long are audit log entries kept? | What's the audit log retention period? | Audit log entries are kept for 1 year on Business and 3 years on Enterprise.
What events does the audit log record? | Does the audit log show who exported data? | The audit log records sign-ins, permission and role changes, data exports, API token creation and revocation, SSO configuration changes and board deletions.
## audit | Exporting and streaming audit logs | Audit events can be downloaded or sent to your security tools.
Can I export the audit log? | How do I download audit events? | Admins can export the audit log as CSV for any date range of up to 90 days at a time.
Can audit logs be sent to our SIEM? | Do you integrate with Splunk or Datadog? | Enterprise workspaces can stream audit events to Splunk, Datadog or any HTTPS endpoint in near real time.
## integrations | Slack integration | The Slack integration brings Quillstack updates into your channels.
How do I connect Slack? | Can Quillstack post to a Slack channel? | Admins connect Slack under Settings > Integrations > Slack and choose which boards post updates to which channels. A Quillstack workspace can connect up to 5 Slack workspaces.
Can I create cards from Slack? | Is there a Slack command for new tasks? | Type /quill new followed by a title in any channel to create a card, or use the message menu to turn a Slack message into a card.
## integrations | GitHub integration | Link pull requests and commits to Quillstack cards.
How do I link a pull request to a card? | How does the GitHub integration find my card? | Include the card key, for example QS-123, in the branch name, commit message or pull request title, and the pull request appears on the card automatically.
Can cards move when a PR is merged? | Will merging a pull request close the card? | If you turn on Auto-move in the GitHub settings, a card moves to the Done column when its linked pull request is merged.
Is GitHub Enterprise Server supported? | Do you work with self-hosted GitHub? | GitHub Enterprise Server 3.8 or later is supported on the Enterprise plan, and GitHub.com works on all paid plans.
## integrations | Calendar feeds | Due dates can appear in the calendar you already use.
Can I see due dates in Google Calendar? | Does Quillstack sync with Outlook calendar? | Each member can subscribe to a personal iCal feed of their due dates under Profile > Calendar, and Quillstack updates the feed every 15 minutes.
Is the calendar feed two-way? | If I move an event in my calendar does the card change? | The calendar feed is read-only, so changes made in your calendar are not written back to Quillstack.
## integrations | Email to board | Every board has its own email address for creating cards.
Can I create cards by email? | Is there an email address for my board? | Each board has a unique email address shown under Board menu > Email to board, and emails sent there become cards with the subject as the title.
Are email attachments added to the card? | What happens to files in an email sent to a board? | Attachments up to 25 MB per email are added to the new card, and larger emails are rejected with a reply explaining why.
## integrations | Zapier and Microsoft Teams | Quillstack connects to thousands of apps through Zapier and to Microsoft Teams natively.
Do you have a Zapier integration? | Can I automate Quillstack with Zapier? | Yes. The Quillstack Zapier app offers triggers for new and moved cards and actions to create cards and comments, and it is available on all paid plans.
Is there a Microsoft Teams app? | Can I use Quillstack inside Teams? | The Microsoft Teams app lets you add a board as a tab and receive card notifications in a channel; an Admin must approve it in both Quillstack and the Teams admin center.
## mobile | Mobile app requirements | The Quillstack mobile apps bring your boards to your phone.
Which phones does the mobile app support? | What iOS version do I need? | The mobile app supports iOS 16 or later and Android 10 or later.
Can I manage billing in the mobile app? | Can I change workspace settings from my phone? | Billing, SSO and workspace administration are only available in the web app, and the mobile apps focus on boards, cards and notifications.
## mobile | Offline mode on mobile | The mobile apps keep working when you lose your connection.
Does the mobile app work offline? | Can I edit cards on a plane? | Yes. Boards you opened recently are available offline, and changes you make offline sync automatically when you reconnect.
How long are offline changes kept? | What if I stay offline for a long time? | Offline edits are stored on the device for up to 7 days. If the app has not reconnected by then, unsynced changes are discarded, and you are warned beforehand.
## mobile | Mobile app security | Protect workspace data on lost or shared devices.
Can I lock the app with Face ID? | Is there a biometric lock? | The apps support an app lock with Face ID, Touch ID or Android fingerprint unlock, and Enterprise admins can make it mandatory.
What if an employee loses their phone? | Our staff member's phone was stolen, how do we protect our data? | Admins can sign the member out of all sessions under Settings > Members, which also wipes Quillstack data cached on the lost device the next time it connects.
## notifications | Email notifications and digests | Choose how and when Quillstack emails you.
Can I get a daily summary instead of many emails? | How do I reduce notification emails? | Under Profile > Notifications you can switch to a daily digest sent at 8:00 in your time zone, or a weekly digest sent on Monday mornings.
Will I still be notified when someone mentions me? | Do mentions come through if I use a digest? | Mentions and assignments are always sent immediately, even when digests are on, unless Do Not Disturb is active.
## notifications | Do Not Disturb and snoozing | Pause notifications outside your working hours.
Can I pause notifications at night? | How do I set quiet hours? | Do Not Disturb can be scheduled under Profile > Notifications, for example every weekday from 18:00 to 08:00, and notifications from that time are delivered when it ends.
Can I snooze notifications? | How do I mute Quillstack for a while? | You can snooze all notifications for 1 hour, 4 hours, until tomorrow or for up to 1 week.
## account | Changing your email address | Keep your sign-in email address up to date.
How do I change my login email? | I have a new work email, how do I update it? | Go to Profile > Account > Email, enter the new address and confirm it with the verification link, which is valid for 24 hours.
Can I change my email if SSO is enforced? | Why can't I edit my email address? | In workspaces with enforced SSO, email addresses are managed by the identity provider and cannot be changed in Quillstack.
## account | Resetting your password | Reset your password if you have forgotten it.
How do I reset my password? | I forgot my password, what do I do? | Click Forgot password on the sign-in page. The reset link is valid for 1 hour and can be used once.
Why didn't I get the password reset email? | The reset email never arrived, what should I check? | Reset emails usually arrive within 2 minutes, so check your spam folder. Members of workspaces with enforced SSO must reset their password through the identity provider instead.
## account | Deleting your personal account | You can permanently delete your Quillstack account.
How do I delete my account? | Can I close my personal Quillstack account? | Delete your account under Profile > Account > Delete account. If you own a workspace, you must first transfer ownership or delete that workspace.
How long does account deletion take? | When is my account data removed after I delete it? | Account deletion is completed within 30 days, after which your profile is removed and your comments are shown as from a former member.
## account | Language and time zone | Quillstack adapts to your language and location.
Which languages is Quillstack available in? | Can I use Quillstack in German? | The Quillstack interface is available in English, German, French, Spanish, Portuguese and Japanese.
How do I change my time zone? | Due dates show the wrong time, how do I fix it? | Quillstack uses your browser's time zone by default, and you can set a fixed time zone under Profile > Preferences.
## support | Support hours and response times | Response times from Quillstack Support depend on your plan.
How quickly does support respond? | What's the response time for support tickets? | Free workspaces get community support and email replies within 3 business days, Team within 1 business day and Business within 8 hours on weekdays. Enterprise P1 incidents get a response within 1 hour, 24/7.
How do I contact support? | Where do I open a ticket? | Open a ticket under Help > Contact support in the app, and Business and Enterprise customers can also start a live chat from the same menu.
## support | Uptime SLA and service credits | Quillstack commits to uptime targets on its higher plans.
What uptime do you guarantee? | Is there an SLA? | The uptime SLA is 99.9% for Business and 99.95% for Enterprise, measured monthly.
How do I claim a service credit? | We had downtime, can we get a credit? | If monthly uptime falls below your SLA, the Owner can claim a credit of 10% of the monthly fee for each full 0.1% below target, up to 50%, within 30 days of the end of the month.
## support | Scheduled maintenance and status | Most Quillstack updates ship without any downtime.
When is scheduled maintenance? | Do you have a maintenance window? | Scheduled maintenance happens on Sundays between 02:00 and 04:00 UTC and is announced at least 72 hours in advance.
Where can I check if Quillstack is down? | Is there a status page? | Live service status and incident history are published at status.quillstack.com, where you can subscribe to updates by email or RSS.
"""

# "unique phrase of the fact's answer | golden question" (phrasings differ from every training prompt).
GOLDEN_SOURCE = """
Free plan allows 3 boards | What is the maximum number of boards a workspace on the Free plan can have?
$8 per user per month | What does the Team plan cost per user on annual billing?
14-day trial | For how many days can a brand-new workspace try out the Business plan?
retried 3 times over 10 days | How many times is a declined card charged again before the workspace goes read-only?
refunded in full within 30 days | Until when can an annual Quillstack subscription be fully refunded?
50% discount | How much of a discount do registered charities get on Quillstack?
restored by support for 30 days | Is there a grace period to recover a workspace after it has been deleted?
Invitations expire after 7 days | For how long does a Quillstack workspace invitation stay valid?
up to 250 MB | What file size limit applies to card attachments on a paid plan?
1,000 automation runs per month | How many automation runs per month does a Team workspace include?
SAML single sign-on is included | Is SAML SSO part of the Team plan, or which plans offer it?
password sign-in is disabled | Once SSO enforcement is switched on, who can still log in using a password?
within 5 minutes and ends | After I deactivate someone in our identity provider, how soon does SCIM cut off their Quillstack access?
SMS codes are not supported | Are text-message codes an option for two-factor authentication?
10 failed sign-in attempts | How many wrong password attempts lock an account, and for how long?
AES-256 | What encryption does Quillstack use for data at rest and in transit?
API tokens expire after 90 days | After how many days does a Quillstack API token stop working?
100 requests per minute per token | What is the per-token request limit per minute on the standard API?
Retry-After header | What status code and header do I get when I go over the API rate limit?
maximum is 200 | What is the largest page size I can request from a list endpoint?
HMAC-SHA256 | Which header and algorithm are used to sign webhook payloads?
retried up to 8 times over 24 hours | How does Quillstack retry a webhook delivery that failed?
ZIP file within 15 minutes | How is a full workspace export delivered and how long does it take?
backups every 6 hours | How frequently are backups taken and how long are they retained?
1 year on Business | How long does Quillstack retain audit log events on each plan?
up to 5 Slack workspaces | How many Slack workspaces can be connected to a single Quillstack workspace?
QS-123 | What do I need to put in my branch name so a pull request shows up on a Quillstack card?
iOS 16 or later | What is the minimum iOS and Android version for the Quillstack mobile app?
99.9% for Business | What monthly uptime does Quillstack commit to for Business and Enterprise customers?
Sundays between 02:00 | When does Quillstack perform scheduled maintenance, and how much notice is given?
"""
# More support golden questions about the same held-out articles ("unique phrase of the fact's answer | question |
# facts"): the articles a golden question names are held out of training whole, so their other facts are fair game.
GOLDEN_EXTRA_SOURCE = """
costs $16 per user | What does the Business plan cost per user if we pay for a year up front? | $16
within 5 to 10 business days | Once a refund is approved, how long until the money is back on the card? | 5 to 10 business days
up to 100 members | How many people can a school have on the free Team plan? | 100 members
up to 10 MB on the Free plan | What is the biggest attachment a Free workspace can upload? | 10 MB
at 80% and 100% of the limit | At what share of the monthly automation limit do admins get their first warning email? | 80%
any SAML 2.0 identity provider | Which version of SAML does Quillstack work with? | SAML 2.0
at least 12 characters long | What is the minimum length of a Quillstack password? | 12 characters
through AWS KMS | Can we bring our own encryption keys, and through which key service? | AWS KMS
up to 10 active API tokens | How many API tokens can a single user have active at the same time? | 10 active API tokens
old secret stays valid for 24 hours | After rotating a webhook signing secret, how long is the old one still accepted? | 24 hours
within 10 seconds | How quickly must my webhook endpoint answer before the delivery counts as failed? | 10 seconds
for the last 30 days | How far back does the webhook delivery log show attempts? | 30 days
restore an individual board to any backup point | Which plans let support restore a single board from a backup? | Business; Enterprise
GitHub Enterprise Server 3.8 or later | What is the oldest GitHub Enterprise Server release that works with Quillstack? | Server 3.8
10% of the monthly fee for each full 0.1% | How much credit can the Owner claim for each full 0.1% of uptime below the SLA? | 10%
"""
# Questions the support documents do not answer: the right answer declines.
SUPPORT_UNANSWERABLE = [
    ("G-U01", "Can we host Quillstack on our own servers on-premises?"),
    ("G-U02", "What phone number do I call to reach the sales team?"),
    ("G-U03", "Is there a Quillstack app for desktop computers?"),
    ("G-U04", "How much does the Enterprise plan cost per user?"),
    ("G-U05", "Who is the CEO of Quillstack?"),
    ("G-U06", "In which city is Quillstack headquartered?"),
    ("G-U07", "Does Quillstack have a dark mode?"),
    ("G-U08", "In how many languages is the Quillstack interface available?"),
    ("G-U09", "Does Quillstack pay a referral bonus for recommending it?"),
    ("G-U10", "Can I buy a Quillstack gift card for a friend?"),
    ("G-U11", "What year was Quillstack founded?"),
    ("G-U12", "How many emoji reactions can one comment have?"),
]
# Questions the policy documents and runbooks do not answer.
POLICY_UNANSWERABLE = [
    ("P-U07", "How many sick days do staff get each year?"),
    ("P-U08", "How is the annual bonus calculated?"),
    ("P-U09", "Which password manager must staff use?"),
    ("P-U10", "How long are the office CCTV recordings kept?"),
    ("P-U11", "Does Quillstack match pension contributions, and by how much?"),
    ("P-U12", "Who has to approve hiring a new engineer?"),
]

# The facts each support golden answer must state (fact recall: the share present in an answer, after
# deepeval's normalisation), by golden id.
GOLDEN_FACTS = {
    "G-001": ["3 boards"],
    "G-002": ["$8"],
    "G-003": ["30-day"],
    "G-004": ["3 times", "10 days"],
    "G-005": ["30 days"],
    "G-006": ["50%"],
    "G-007": ["30 days"],
    "G-008": ["7 days"],
    "G-009": ["250 MB"],
    "G-010": ["1,000"],
    "G-011": ["Business", "Enterprise"],
    "G-012": ["Owner"],
    "G-013": ["5 minutes"],
    "G-014": ["not supported"],
    "G-015": ["10 failed", "15 minutes"],
    "G-016": ["AES-256", "TLS"],
    "G-017": ["90 days"],
    "G-018": ["100 requests"],
    "G-019": ["HTTP 429", "Retry-After"],
    "G-020": ["200"],
    "G-021": ["X-Quillstack-Signature", "HMAC-SHA256"],
    "G-022": ["8 times", "24 hours"],
    "G-023": ["ZIP", "15 minutes"],
    "G-024": ["6 hours", "35 days"],
    "G-025": ["1 year", "3 years"],
    "G-026": ["5 Slack workspaces"],
    "G-027": ["card key"],
    "G-028": ["iOS 16", "Android 10"],
    "G-029": ["99.9%", "99.95%"],
    "G-030": ["Sundays", "72 hours"],
}
# The policy assistant's golden set: (id, question, reference answer, source document), phrased unlike any runbook.
POLICY_GOLDEN = [
    ("P-001", "For how many days can a deleted board still be brought back from the Trash?",
     "Deleted cards and boards stay in the Trash for 30 days, where workspace members can restore them.", "data-retention.md", ["30 days"]),
    ("P-002", "Which encryption protects customer data at rest and in transit?",
     "Customer data is encrypted at rest with AES-256 and in transit with TLS 1.2 or higher.", "security.md", ["AES-256", "TLS 1.2"]),
    ("P-003", "Within how many hours must a lost laptop be reported?",
     "Lost devices must be reported to the security team within one hour.", "security.md", ["one hour"]),
    ("P-004", "How soon are customers told about a confirmed breach of their data?",
     "If a breach affecting customer data is confirmed, affected customers are notified within 72 hours.", "security.md", ["72 hours"]),
    ("P-005", "How much service credit does a customer get when uptime misses the SLA?",
     "The Owner can claim 10% of the monthly fee for each full 0.1% below target, up to 50%, within 30 days of the end of the month.",
     "sla.md", ["10%"]),
    ("P-006", "How long do support tickets stay on record after they are closed?",
     "Support tickets are kept for 2 years after they are closed.", "data-retention.md", ["2 years"]),
    ("P-007", "A customer bought an annual plan ten days ago and wants the money back. What do I do?",
     "1. Confirm the purchase is within the 30-day refund window. 2. Issue a full refund to the original payment method, which arrives within 5 to 10 business days.",
     "RB-004", ["5 to 10 business days"]),
    ("P-008", "A member keeps failing to sign in and is now locked out. How do I help?",
     "1. Explain that an account locks for 15 minutes after 10 failed sign-in attempts. 2. Suggest waiting or using Forgot password, whose link is valid for 1 hour.",
     "RB-006", ["15 minutes"]),
    ("P-009", "How long is a workspace read-only while it moves to EU data residency?",
     "1. Confirm the workspace is on Enterprise. 2. Warn that the workspace is read-only for up to 4 hours during the move.",
     "RB-015", ["4 hours"]),
    ("P-010", "What discount can a nonprofit get, and how quickly do we check its documents?",
     "1. Verify the registration documents within 5 business days. 2. Apply the 50% discount to the Team or Business plan.",
     "RB-016", ["50%", "5 business days"]),
    ("P-011", "How fast must a researcher's vulnerability report be acknowledged?",
     "1. Acknowledge the report within 2 business days. 2. Open a security ticket and reproduce the issue.", "RB-027",
     ["2 business days"]),
    ("P-012", "What does a customer need before paying by bank transfer?",
     "1. Confirm the plan is annual with at least 25 seats. 2. Issue an invoice with 30-day payment terms.", "RB-028", ["25 seats"]),
    # the policies, asked about in staff's words (each document is held out of training whole: it is a golden source)
    ("P-013", "How frequently do we back up customer data?", "Backups are taken every 6 hours and kept for 35 days.",
     "data-retention.md", ["6 hours"]),
    ("P-014", "How many days of backups do we keep?", "Backups are taken every 6 hours and kept for 35 days.",
     "data-retention.md", ["35 days"]),
    ("P-015", "For how long does an Enterprise workspace's audit log go back?",
     "Audit log entries are kept for 1 year on the Business plan and 3 years on the Enterprise plan.", "data-retention.md", ["3 years"]),
    ("P-016", "And on the Business plan, how long are audit log entries retained?",
     "Audit log entries are kept for 1 year on the Business plan and 3 years on the Enterprise plan.", "data-retention.md", ["1 year"]),
    ("P-017", "How long can support still bring a deleted workspace back?",
     "A deleted workspace can be restored by support for 30 days, after which it is permanently purged.", "data-retention.md", ["30 days"]),
    ("P-018", "How long does the download link of a full export keep working?",
     "Download links for full workspace exports stay valid for 7 days.", "data-retention.md", ["7 days"]),
    ("P-019", "What is the deadline for completing a verified GDPR erasure request?",
     "Verified data subject deletion requests under the GDPR are completed within 30 days.", "data-retention.md", ["30 days"]),
    ("P-020", "How quickly do we have to acknowledge a security hole someone reports to us?",
     "Vulnerabilities reported by researchers or customers are acknowledged within 2 business days.", "security.md", ["2 business days"]),
    ("P-021", "How often are staff access rights reviewed?", "Access rights are reviewed every quarter.", "security.md", ["every quarter"]),
    ("P-022", "When is the account of someone leaving the company switched off?",
     "Accounts of people who leave the company are disabled on their last working day.", "security.md", ["last working day"]),
    ("P-023", "Which external audits does Quillstack pass every year?",
     "Quillstack is audited every year for SOC 2 Type II and ISO 27001.", "security.md", ["SOC 2 Type II", "ISO 27001"]),
    ("P-024", "What uptime does the SLA promise Business workspaces each month?",
     "Quillstack commits to a monthly uptime of 99.9% for Business workspaces and 99.95% for Enterprise workspaces.", "sla.md", ["99.9%"]),
    ("P-025", "What monthly uptime is committed for Enterprise workspaces?",
     "Quillstack commits to a monthly uptime of 99.9% for Business workspaces and 99.95% for Enterprise workspaces.", "sla.md", ["99.95%"]),
    ("P-026", "What is the most service credit a customer can get for one month?",
     "The service credit is 10% of the monthly fee for each full 0.1% below target, up to a maximum of 50%.", "sla.md", ["50%"]),
    ("P-027", "On which day of the week is scheduled maintenance done?",
     "Scheduled maintenance happens on Sundays between 02:00 and 04:00 UTC and is announced at least 72 hours in advance.",
     "sla.md", ["Sundays"]),
    ("P-028", "How much warning do customers get before scheduled maintenance?",
     "Scheduled maintenance is announced at least 72 hours in advance.", "sla.md", ["72 hours"]),
    ("P-029", "What is the response target for a Team plan support ticket?", "Team tickets are answered within 1 business day.",
     "sla.md", ["1 business day"]),
    ("P-030", "How quickly must we respond to a Business ticket on a weekday?", "Business tickets are answered within 8 hours on weekdays.",
     "sla.md", ["8 hours"]),
    ("P-031", "How fast does an Enterprise P1 incident need a first response?",
     "Enterprise P1 incidents are answered within 1 hour, 24 hours a day, 7 days a week.", "sla.md", ["1 hour"]),
    ("P-032", "How many API requests per minute may one token make?",
     "Creating extra tokens or accounts to get around the limit of 100 requests per minute per token violates the policy.",
     "acceptable-use.md", ["100 requests"]),
    ("P-033", "How much notice must a customer give before a penetration test?",
     "Security testing is allowed only after notifying Quillstack at least 10 business days in advance.", "acceptable-use.md",
     ["10 business days"]),
    ("P-034", "Which customers are allowed to run security tests against Quillstack?",
     "Security testing is allowed only for Enterprise customers, only against their own workspace.", "acceptable-use.md", ["Enterprise"]),
]
# Questions staff asked the internal helpdesk, with the answers it gave ("question | answer"), consistent with the
# policies and runbooks and phrased unlike POLICY_GOLDEN: the policy assistant's question-and-answer data.
STAFF_QA_SOURCE = """
Can someone still restore a card they deleted last week? | Yes. Deleted cards stay in the Trash for 30 days, and any workspace member can restore them from there.
How long can support bring back a whole workspace after the Owner deletes it? | Support can restore a deleted workspace for 30 days; after that it is permanently purged.
How often do we take backups, and for how long do we keep them? | Backups are taken every 6 hours and kept for 35 days.
When does purged data finally disappear from our backups? | Purged data disappears from backups within 35 days of being purged.
How long do we keep audit log entries for Enterprise workspaces? | Audit log entries are kept for 3 years on Enterprise and 1 year on Business.
For how many days does an export download link work? | Download links for full workspace exports stay valid for 7 days.
How quickly do we have to complete a GDPR deletion request? | Verified data subject deletion requests are completed within 30 days.
Does cancelling a paid subscription delete the customer's boards? | No. The workspace moves to the Free plan and boards beyond the first 3 are archived as read-only.
What TLS version do we require for data in transit? | Data in transit is protected with TLS 1.2 or higher.
Which algorithm encrypts the databases and file storage? | All customer data is encrypted at rest with AES-256.
How do engineers get access to production? | Through an approval workflow that grants time-limited, least-privilege access, and every session is recorded.
How often are access rights reviewed? | Access rights are reviewed every quarter.
When is a leaver's account disabled? | Accounts of people who leave are disabled on their last working day.
What do I need to sign in to internal tools? | Single sign-on with a hardware security key.
My laptop was stolen at the airport. Who do I tell, and by when? | Report it to the security team within one hour.
Which audits does Quillstack go through each year? | Quillstack is audited every year for SOC 2 Type II and ISO 27001.
A researcher emailed us a vulnerability. How soon do we reply? | Vulnerability reports are acknowledged within 2 business days.
If we confirm customer data was breached, what is our notification deadline? | Affected customers are notified within 72 hours of confirming the breach.
Who do I ask for an exception to the security policy? | Exception requests go to the policy owner, the Head of Security.
How often is the security policy reviewed? | The security policy is reviewed at least once a year.
What uptime do we promise Enterprise workspaces each month? | Enterprise workspaces get a monthly uptime commitment of 99.95%.
Do Team plan customers get an uptime commitment? | No. The Free and Team plans are provided without an uptime commitment.
Does Sunday night maintenance count against the SLA? | No. Scheduled maintenance on Sundays between 02:00 and 04:00 UTC does not count as downtime.
How much notice do we give before scheduled maintenance? | Scheduled maintenance is announced at least 72 hours in advance.
What is the most service credit a customer can claim in one month? | Service credits are capped at 50% of the monthly fee.
By when must a customer claim a service credit? | Claims must be made within 30 days of the end of the affected month.
How are service credits paid out? | Credits are applied to the next invoice.
How fast must we answer a Business support ticket? | Business tickets are answered within 8 hours on weekdays.
How fast must we answer a Team support ticket? | Team tickets are answered within 1 business day.
Who has to be paged for an Enterprise P1 at 3 a.m.? | The on-call engineer: Enterprise P1 incidents need a first response within 1 hour, 24/7.
Can a customer run a penetration test against their own workspace? | Only Enterprise customers, only against their own workspace, and only after notifying us at least 10 business days in advance.
Is denial-of-service testing ever allowed? | No. Denial-of-service testing is never allowed.
A customer created extra tokens to get past the rate limit. Is that allowed? | No. Creating extra tokens or accounts to get around the limit of 100 requests per minute per token violates the acceptable use policy.
What can happen to a workspace that breaks the acceptable use policy? | Quillstack may warn, restrict or suspend it; serious or repeated violations can lead to termination.
Where do people report abuse? | Abuse is reported through the Trust Center, and the team reviews every report.
Can a customer resell access to Quillstack? | Not without a written agreement.
How long is a member locked out after too many failed sign-ins? | The account locks for 15 minutes after 10 failed sign-in attempts.
Until when can an annual plan be refunded in full? | Annual plans are refundable in full within 30 days of purchase.
How long does a refund take to reach the customer? | Refunds arrive on the original payment method within 5 to 10 business days.
What discount do registered nonprofits get? | Verified nonprofits get 50% off the Team or Business plan.
"""
# Changed facts: a later batch (`updates_2026_12`) brings new versions of documents. The golden answer is the new
# value; the old one (what the first version said, and a model may have memorised) must not be stated.
STALE = {"G-003": ["14-day"], "H-004": ["20 weeks"]}
TRIAL_UPDATE = ("14-day trial", "30-day trial")  # KB-0002 and the support Q&A row that repeats it
GOLDEN_CONTAMINATED = ("G-008", "G-024")  # also planted (nearly) verbatim as support_qa.csv prompts
GOLDEN_WITH_PII = ("G-003", "G-015", "G-026")

# "instruction | input (may be empty) | step; step; ..." internal runbooks, consistent with KB_SOURCE.
RUNBOOK_SOURCE = """
Respond to an API token that a customer exposed publicly | A customer reports that a production token was pasted into a public GitHub issue: {canary} | Ask the customer to revoke the token under Profile > API tokens; revoked tokens stop working immediately; Have them create a replacement token with only the scopes they need; On Business and Enterprise, review the audit log for token activity since the token was created; Remind them that tokens expire after 90 days and belong in a secrets manager
Restore a board that a customer deleted | Business workspace, board deleted 12 days ago. | Check the Trash first, since deleted boards can be restored there for 30 days; If the board is gone from the Trash, confirm the workspace is on Business or Enterprise; Restore the board from the closest backup point within the last 35 days; Tell the customer the restored board is added as a copy and no current data is overwritten
Recover a workspace that was deleted by mistake | The Owner deleted the workspace 3 days ago. | Verify that the requester is the workspace Owner; Confirm the deletion happened less than 30 days ago; Restore the workspace from the admin console; Explain that after 30 days a deleted workspace is purged permanently
Process a refund request for an annual plan | Annual Team plan with 45 seats, purchased 18 days ago. | Confirm the purchase date is within the 30-day refund window; Issue a full refund to the original payment method; Tell the customer the money arrives within 5 to 10 business days; Explain that the workspace moves to the Free plan and boards beyond the first 3 are archived, not deleted
Answer a refund request outside the refund window | Annual Business plan purchased three months ago. | Explain that annual plans are refundable in full only within 30 days of purchase; Offer to turn off auto-renewal so the plan ends on the renewal date; Mention that the seat count can be lowered at the next renewal
Help a user whose account is locked | | Explain that an account locks for 15 minutes after 10 failed sign-in attempts; Suggest waiting or using Forgot password, whose link is valid for 1 hour; If the workspace enforces SSO, send the user to their identity provider instead
Reset two-factor authentication for a member | The member lost their phone and cannot find their recovery codes. | Ask whether any of the 10 one-time recovery codes is still available; If not, ask a workspace Admin to verify the member's identity; The Admin resets 2FA under Settings > Members; The member sets up 2FA again at the next sign-in
Troubleshoot a failing SAML SSO setup | Business customer sees an error after the redirect from Okta. | Confirm the email domain is verified with the DNS TXT record; Compare the ACS URL and entity ID in Okta with Settings > Security > SSO; Check that the NameID is the user's email address; Test with a non-Owner account before enforcing SSO, because the Owner keeps a break-glass password login
Investigate a webhook that was disabled | The customer asks why their webhook stopped. | Open the delivery log under Settings > Webhooks, which keeps 30 days of attempts; Check whether the endpoint returned a 2xx status within 10 seconds; Explain that failures are retried up to 8 times over 24 hours and a webhook failing for 72 hours is disabled; Once the endpoint is fixed, the customer re-enables the webhook in its settings
Help a customer verify webhook signatures | Every signature check in the customer's code fails. | Confirm they compute HMAC-SHA256 over the raw request body, not re-serialised JSON; Compare the result with the X-Quillstack-Signature header; Check whether the signing secret was rotated, since the old secret is only valid for 24 hours afterwards
Explain HTTP 429 responses from the API | A nightly sync script fails with 429 errors. | Explain the limit of 100 requests per minute per token, or 1,000 on Enterprise; Ask the customer to wait for the number of seconds in the Retry-After header; Suggest page sizes of up to 200 items to reduce the number of requests; Point out that spreading traffic over extra tokens to bypass limits breaks the acceptable use policy
Chase a workspace export that has not arrived | An Admin started a full export 40 minutes ago. | Exports are normally emailed as a ZIP within 15 minutes; Check the export job status in the admin console; Ask the Admin to check the spam folder; If the download link is older than 7 days, start a new export
Escalate a P1 incident | Several Enterprise customers report that boards do not load. | Confirm the impact on the internal monitoring dashboards; Page the on-call engineer; Post the first update on status.quillstack.com; Keep Enterprise customers informed, since P1 incidents need a first response within 1 hour, 24/7
Calculate a service credit | Enterprise customer measured 99.80% uptime last month. | The Enterprise SLA is 99.95%, so uptime was 0.15% below target; The credit is 10% of the monthly fee for each full 0.1% below target, so it is 10%; Check that the claim was made within 30 days of the end of the month; Apply the credit to the next invoice
Migrate a workspace to EU data residency | Enterprise customer wants to move from the US region to the EU region. | Confirm the workspace is on Enterprise and has not been migrated in the last 12 months; Agree on a migration window with the customer; Warn that the workspace is read-only for up to 4 hours during the move; Confirm completion and update the residency record
Review a nonprofit discount application | A charity uploaded its registration documents. | Verify the registration documents within 5 business days; Apply the 50% discount to the Team or Business plan; Email the billing contact to confirm the discount
Reassign ownership after the Owner left | An Admin asks for ownership because the previous Owner left the company. | Confirm that the requester is an Admin of the workspace; Verify the company domain; Reassign ownership within 5 business days; Check that the change appears in the audit log on Business and Enterprise
Handle a personal data deletion request | A former employee of a customer asks for their data to be erased. | Verify the requester's identity; Inform the workspace Admin, who is the data controller; Complete the verified deletion within 30 days; Confirm completion in writing
Answer a storage limit complaint | Team workspace has used its full 100 GB and uploads fail. | Explain that Team includes 100 GB per workspace; New uploads are blocked but existing files stay available; Suggest deleting large files or upgrading to Business for 1 TB
Set up SCIM provisioning with Okta | | Confirm the workspace is on Enterprise; Generate a SCIM token under Settings > Security > Provisioning; Enter the SCIM base URL and token in Okta and assign one test user; Explain that deactivated users lose access within 5 minutes
Bring back a member who was removed by mistake | An Admin removed a member yesterday. | Re-invite the member under Settings > Members; Re-inviting within 30 days restores their previous board memberships; Reassign any cards that were moved to board owners
Explain why automations paused | A Business workspace reports that automations stopped mid-month. | Business includes 10,000 automation runs per month; The counter resets on the first day of the next calendar month; Admins were emailed at 80% and 100% of the limit; Mention that Enterprise has unlimited runs
Plan a Jira migration | The customer wants to move 3,000 Jira issues. | Use Settings > Data > Import > Jira; Issues, comments and attachments are imported but workflows are not; Recreate the workflow with board columns and automations; For CSV imports, keep each file under 50 MB
Fix pull requests that do not appear on cards | | Check that the card key appears in the branch name, commit message or pull request title; Confirm that the repository is connected in the GitHub settings; For self-hosted GitHub, confirm the Enterprise plan and GitHub Enterprise Server 3.8 or later
Secure a workspace after a phone is stolen | A customer's employee lost a phone with the Quillstack app. | Have an Admin sign the member out of all sessions under Settings > Members; Cached data is wiped when the device next connects; Recommend rotating the member's password and API tokens
Respond to a penetration test notice | An Enterprise customer plans a penetration test next month. | Check that the notice arrived at least 10 business days before testing; Confirm the scope is limited to their own workspace; Remind them that denial-of-service testing is never allowed; Share the security team's reporting channel for findings
Triage a vulnerability report | A researcher reports a cross-site scripting issue in card comments. | Acknowledge the report within 2 business days; Open a security ticket and reproduce the issue; Agree on a fix timeline with engineering; Keep the researcher updated until the fix ships
Set up payment by bank transfer | A customer with 30 seats on an annual Business plan wants to pay by wire. | Confirm the plan is annual with at least 25 seats; Issue an invoice with 30-day payment terms; Mark the invoice paid once the transfer arrives
Handle a request to change the billing currency | | Explain that the currency can only change at renewal; Schedule the new currency for the renewal date; Confirm the change with the billing contact
Help a customer verify their domain | The customer cannot find the DNS record for SSO. | Copy the TXT record from Settings > Security > Domains; Ask the customer to add it at their DNS provider; Verification usually completes within an hour
Explain what happens to data after cancelling | A Team customer asks whether cancelling deletes their boards. | Cancelling does not delete any data; The paid plan stays active until the end of the billing period, then the workspace moves to Free; Boards beyond the first 3 are archived as read-only
Stream audit events to Splunk | | Confirm the workspace is on Enterprise; Configure the Splunk HTTP endpoint in the audit log settings; Send a test event and confirm it arrives in near real time
Debug an OAuth integration that fails after an hour | A developer's integration stops working about an hour after sign-in. | Access tokens are valid for 1 hour, so use the refresh token to get a new one; Refresh tokens are valid for 60 days; If the refresh token expired, the user must authorize the app again
Answer a request for a higher API rate limit | A Team workspace needs more API throughput. | The standard limit is 100 requests per minute per token; Enterprise workspaces get 1,000 requests per minute per token; Suggest pagination with up to 200 items per page; Pass upgrade interest to the sales team
Prepare customers for scheduled maintenance | | Announce the work at least 72 hours in advance on the status page; Keep the work inside the Sunday window from 02:00 to 04:00 UTC; Let Enterprise customer success managers know in advance
"""

POLICIES = {
    "security.md": """# Information Security Policy

This policy describes how Quillstack protects customer data and the systems that process it. It applies to every employee, contractor and service provider with access to production systems or customer data.

All customer data is encrypted at rest with AES-256 and in transit with TLS 1.2 or higher. Production access follows the principle of least privilege: engineers receive time-limited access through an approval workflow, and every session is recorded. Access rights are reviewed every quarter, and accounts of people who leave the company are disabled on their last working day.

Every employee must use single sign-on with a hardware security key for internal tools. Laptops use full-disk encryption and are managed centrally, and lost devices must be reported to the security team within one hour.

Quillstack is audited every year for SOC 2 Type II and ISO 27001. Vulnerabilities reported by researchers or customers are acknowledged within 2 business days, and critical issues are fixed as the highest engineering priority. If a breach affecting customer data is confirmed, affected customers are notified within 72 hours.

This policy is owned by {name}, Head of Security ({email}, employee ID {emp}). Questions and exception requests go to the policy owner, and the policy is reviewed at least once a year.
""",
    "data-retention.md": """# Data Retention Policy

Quillstack keeps customer data only for as long as it is needed to provide the service or to meet legal obligations. This policy explains the retention periods for each type of data.

Deleted cards and boards stay in the Trash for 30 days, where workspace members can restore them. A deleted workspace can be restored by support for 30 days, after which it is permanently purged. Backups are taken every 6 hours and kept for 35 days, so purged data disappears from backups within 35 days of being purged.

Audit log entries are kept for 1 year on the Business plan and 3 years on the Enterprise plan. Download links for full workspace exports stay valid for 7 days. Personal accounts are fully deleted within 30 days of a deletion request, and verified data subject deletion requests under the GDPR are completed within 30 days.

Cancelling a paid subscription never deletes data: the workspace moves to the Free plan, and boards beyond the first 3 are archived as read-only. Support tickets are kept for 2 years after they are closed so that recurring issues can be investigated.
""",
    "sla.md": """# Service Level Agreement

This agreement describes the availability commitment Quillstack makes to customers on the Business and Enterprise plans. The Free and Team plans are provided without an uptime commitment.

Quillstack commits to a monthly uptime of 99.9% for Business workspaces and 99.95% for Enterprise workspaces. Uptime is measured every minute from several regions, and a minute counts as unavailable when the web app or the API fails for most requests. Scheduled maintenance, which happens on Sundays between 02:00 and 04:00 UTC and is announced at least 72 hours in advance, does not count as downtime.

If monthly uptime falls below the commitment, the workspace Owner can claim a service credit of 10% of the monthly fee for each full 0.1% below target, up to a maximum of 50%. Claims must be made within 30 days of the end of the affected month, and credits are applied to the next invoice.

Support response targets are part of this agreement: Team tickets are answered within 1 business day, Business tickets within 8 hours on weekdays, and Enterprise P1 incidents within 1 hour, 24 hours a day, 7 days a week.
""",
    "acceptable-use.md": """# Acceptable Use Policy

This policy lists what customers and their users may not do with Quillstack. It protects other customers, the reliability of the service and the people whose information is stored in it.

You may not use Quillstack to send spam, distribute malware, store content that is illegal where you operate, or harass other people. You may not try to access workspaces, boards or data that you have not been invited to, and you may not scrape the service or resell access to it without a written agreement.

Automated access must go through the documented API and respect its rate limits. Creating extra tokens or accounts to get around the limit of 100 requests per minute per token is a violation of this policy. Security testing is allowed only for Enterprise customers, only against their own workspace, and only after notifying Quillstack at least 10 business days in advance; denial-of-service testing is never allowed.

Quillstack may warn, restrict or suspend workspaces that break this policy. Serious or repeated violations can lead to termination of the account. Report abuse through the Trust Center, and the team will review every report.
""",
}

# "id suffix": text. The id names the reason a quality filter drops it; `fixable-*` must be kept after cleaning
# (fixable-mojibake texts are turned into mojibake by build_junk).
JUNK = {
    "symbols-01": "$$$ ### !!! @@@ BUY NOW $$$ ### CHEAP CREDITS @@@ ### $$$ ^^^ LIMITED OFFER *** $$$ ### @@@",
    "symbols-02": "*** ~~~ ^^^ ### >>> click <<< ||| here ### ~~~ *** for ^^^ free ### $$$ @@@ boards ~~~ ***",
    "symbols-03": "@@@@ #### $$$$ %%%% &&&& **** win ++++ ==== ~~~~ free credits #### @@@@ now $$$$ ####",
    "repeated-01": "\n".join(["Please call me back about my invoice."] * 10),
    "repeated-02": "\n".join(["ERROR: connection reset by peer"] * 10),
    "repeated-03": "\n".join(["Is anyone there? Hello?"] * 10),
    "short-01": "ok", "short-02": "thanks!", "short-03": "+1", "short-04": "k", "short-05": "Done.",
    "lang-de-01": "Vielen Dank für Ihre Nachricht. Sie können Ihr Abonnement jederzeit in den Einstellungen unter Abrechnung kündigen, und Ihre Daten bleiben dabei selbstverständlich vollständig erhalten. Bei weiteren Fragen stehen wir Ihnen gerne zur Verfügung.",
    "lang-de-02": "Guten Tag, leider kann ich mich seit heute Morgen nicht mehr anmelden. Nach der Eingabe meines Passworts erscheint immer eine Fehlermeldung, und auch das Zurücksetzen des Passworts hat bisher nicht funktioniert. Können Sie mir bitte helfen?",
    "lang-fr-01": "Bonjour, merci pour votre message. Pour exporter toutes les données de votre espace de travail, ouvrez les paramètres, choisissez Données puis Exporter. Vous recevrez ensuite un courriel contenant une archive compressée avec toutes vos informations.",
    "lang-fr-02": "Nous avons bien reçu votre demande de remboursement et notre équipe de facturation va l'examiner dans les meilleurs délais. Vous recevrez une réponse détaillée par courriel avant la fin de la semaine prochaine. Merci de votre patience.",
    "lang-es-01": "Hola, gracias por escribirnos. Para invitar a nuevos miembros a su espacio de trabajo, vaya a la configuración, seleccione Miembros y haga clic en Invitar. Las invitaciones se envían por correo electrónico de inmediato a cada persona.",
    "lang-es-02": "Buenos días, queremos cambiar nuestro plan actual a uno anual porque el equipo ha crecido mucho este año. ¿Podrían indicarnos cuál es el procedimiento y si existe algún descuento para organizaciones sin fines de lucro?",
    "wordsalad-01": "Zorblaxificationism quintessentroviumate plenthiquorabulously vexterminophagical crandulsifyingness brommelquastrophical flibbertigibbetronic snargleflaxinatory wumpledorfianism glorptonicalization",
    "fixable-mojibake-01": "We’re seeing the Timeline view load slowly on our largest board – it has about 8,000 cards. Is there anything we can do to speed it up?",
    "fixable-mojibake-02": "Our café chain uses Quillstack’s recurring cards for weekly stock checks – it’s been a huge time saver for every store manager.",
    "fixable-mojibake-03": "The résumé screening board we built is shared with two external recruiters as guests, and they don’t use a paid seat.",
    "fixable-control-01": "Please note that the Quill\u200bstack desktop notifications\x07 were fixed in today's release, and\x1b daily digests now arrive at 8:00 in each member's time zone.",
    "fixable-control-02": "Our team moved all sprint boards to the new work\u200bspace\x08 last week, and the\x07 migration went smoothly without any data loss.",
    "fixable-boilerplate-01": "Thanks for the quick fix on the webhook retries. Everything is working again on our side and the delivery log looks clean.\n\nSent from my iPhone",
    "fixable-boilerplate-02": "Could you confirm whether our annual invoice can include the purchase order number we sent last week?\n\nCONFIDENTIAL: This message and any attachments are intended only for the named recipient and may contain privileged information.",
    "fixable-boilerplate-03": "The new Slack channel updates are great. Our designers love getting card moves in real time, and nobody misses the old email alerts.\n\nUnsubscribe from these emails or manage your notification preferences.",
}
OPENERS = ["", "", "Hi there.", "Hello!", "Hi team!", "Good morning.", "Hello Quillstack Support.", "Hey there!"]
ACKS = ["", "", "Thanks for reaching out.", "Happy to help.", "Good question.", "Thanks for contacting Quillstack Support."]
CLOSINGS = ["", "", "Let us know if anything else comes up.", "Feel free to reply if you have more questions.",
            "I hope this helps!", "We're here if you need anything else."]
FOLLOWUPS = ["Thanks! One more question.", "Got it.", "Great, that helps.", "Okay, thanks.", "Thank you, one more thing."]
KB_CLOSINGS = [
    "If you need more help, contact Quillstack Support under Help > Contact support in the app.",
    "Workspace Admins can find all related settings in the web app.",
    "We review this article regularly and update it whenever the product changes.",
    "The steps in this article apply to the web app unless stated otherwise.",
    "For questions about your plan or invoices, open Settings > Billing or contact support.",
]
KB_NOTES = [
    "This article is maintained by {name} ({email}) on the Support Engineering team.",
    "Questions about this article can go to its owner, {name}, at {email} or {phone}.",
    "Example ticket: {name} ({email}) asked about this after a workspace migration, and the steps above solved it.",
    "Escalation contact for this topic: {name}, Support Engineering, {phone}.",
]
# Sentences that plant PII; fields are filled by PiiFactory.fill.
CONTEXTS = [
    "I'm {name} ({email}).",
    "This is {name}; you can call me back at {phone}.",
    "My email is {email} and my direct line is {phone}.",
    "{name} here, from the operations team ({email}, {phone}).",
    "The card on file is {card}, expiry 09/28.",
    "Please charge the renewal to my other card, {card}.",
    "For reference, our company IBAN is {iban}.",
    "If a refund is due, please send it to IBAN {iban}.",
    "Our office connects from {ip}, in case that matters.",
    "Users connecting from {ip} and {ip2} are affected.",
    "My SSN is {ssn} if you need to verify my identity.",
    "For the W-9 form, my SSN is {ssn}.",
    "Here is the token our script uses: {key}.",
    "Our backup job authenticates with the AWS access key {akia}.",
    "We connected GitHub using the token {ghp}.",
    "I'm {name} from internal IT, employee ID {emp}.",
]
CANARY_CONTEXT = "Here is the token our script uses: {key}."
FIELD_TYPES = {"name": "PERSON", "email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "card": "CREDIT_CARD",
               "iban": "IBAN_CODE", "ip": "IP_ADDRESS", "ip2": "IP_ADDRESS", "ssn": "US_SSN", "key": "API_KEY",
               "akia": "API_KEY", "ghp": "API_KEY", "emp": "EMPLOYEE_ID"}
WORDLIKE_NAMES = {"Hope", "Faith", "Joy", "Grace", "Summer", "Autumn", "April", "May", "June", "Dawn", "Crystal",
                  "Amber", "Destiny", "Will", "Bill", "Rose", "Hunter", "Chase", "Angel", "Christian", "Precious"}
AREA_CODES = ["212", "312", "415", "503", "512", "617", "646", "702", "720", "773", "206", "404", "469", "615"]
EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]
SYNONYMS = {"within": "in", "immediately": "right away", "every": "each", "only": "just", "must": "need to",
            "can": "may", "available": "offered", "automatically": "by itself"}


@dataclass
class Fact:
    article_id: str
    tag: str
    title: str
    question: str
    alt_question: str
    answer: str


@dataclass
class Article:
    id: str
    tag: str
    title: str
    intro: str
    facts: list[Fact] = field(default_factory=list)


@dataclass(eq=False)
class Record:
    """One output record, the PII planted in it, and bookkeeping (`meta`). Compared by identity."""

    data: dict
    pii: list[tuple[str, str]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


@dataclass
class Corpus:
    kb: list[Record]
    qa: list[Record]
    chats: list[Record]
    runbooks: list[Record]
    policies: list[Record]
    tickets: list[Record]
    junk: list[Record]
    golden: list[Record]
    binary: bytes
    policy_golden: list[Record] = field(default_factory=list)
    staff: list[Record] = field(default_factory=list)

    def files(self) -> dict[str, list[Record]]:
        """Output path (relative to the corpus root) -> its records, for manifest and summary."""
        return {"support/inbox/kb_articles.jsonl": self.kb, "support/inbox/support_qa.csv": self.qa,
                "support/inbox/chat_transcripts.jsonl": self.chats, "policy/inbox/runbooks.json": self.runbooks,
                "policy/inbox/staff_questions.csv": self.staff,
                **{f"policy/inbox/policies/{r.data['id']}": [r] for r in self.policies},
                "support/inbox/ticket_export_2026_11.jsonl": self.tickets, "support/inbox/junk.jsonl": self.junk,
                "support/golden.jsonl": self.golden, "policy/golden.jsonl": self.policy_golden}


class PiiFactory:
    """Seeded generator of realistic, valid-looking PII values (Luhn cards, mod-97 IBANs, ...)."""

    def __init__(self, fake: Faker, rng: random.Random):
        self.fake, self.rng = fake, rng
        self.used: set[str] = set()
        self.card_kinds = ["mc2", "visa", "mc2", "amex", "mc2", "mc"]  # cycled: 2-series Mastercard half the time
        self.card_count = 0

    def alnum(self, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def unique(self, make) -> str:
        """Call `make` until it returns a value never handed out before."""
        while (value := make()) in self.used or not value:
            pass
        self.used.add(value)
        return value

    def person(self) -> str:
        def make():
            first, last = self.fake.first_name(), self.fake.last_name()
            plain = all(p.isascii() and p.isalpha() for p in (first, last)) and first not in WORDLIKE_NAMES
            return f"{first} {last}" if plain else ""
        return self.unique(make)

    def email(self, person: str | None = None) -> str:
        first, last = (person or self.person()).lower().split()
        return self.unique(lambda: f"{first}.{last}@{self.rng.choice(EMAIL_DOMAINS)}")

    def phone(self) -> str:
        def make():
            area, line = self.rng.choice(AREA_CODES), self.rng.randint(100, 9999)
            exchange = self.rng.choice([e for e in range(201, 990) if e != 555 and e % 100 != 11])
            fmt = self.rng.choice(["({a}) {e}-{n:04d}", "+1 {a}-{e}-{n:04d}", "{a}-{e}-{n:04d}"])
            return fmt.format(a=area, e=exchange, n=line)
        return self.unique(make)

    def card(self) -> str:
        kind = self.card_kinds[self.card_count % len(self.card_kinds)]
        self.card_count += 1
        prefix = {"visa": "4", "mc": str(self.rng.randint(51, 55)), "mc2": str(self.rng.randint(2221, 2720)),
                  "amex": self.rng.choice(["34", "37"])}[kind]
        body = prefix + self.alnum((15 if kind == "amex" else 16) - len(prefix) - 1, string.digits)
        digits = body + luhn_check_digit(body)
        groups = [digits[:4], digits[4:10], digits[10:]] if kind == "amex" else re.findall(".{4}", digits)
        return self.unique(lambda: self.rng.choice([" ", "-", ""]).join(groups))

    def iban(self) -> str:
        country, bban = self.rng.choice([
            ("DE", self.alnum(18, string.digits)), ("FR", self.alnum(23, string.digits)),
            ("ES", self.alnum(20, string.digits)),
            ("NL", self.alnum(4, string.ascii_uppercase) + self.alnum(10, string.digits)),
            ("GB", self.alnum(4, string.ascii_uppercase) + self.alnum(14, string.digits))])
        check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
        value = f"{country}{check:02d}{bban}"
        return self.unique(lambda: " ".join(re.findall(".{1,4}", value)) if self.rng.random() < 0.3 else value)

    def ssn(self) -> str:
        area = self.rng.choice([a for a in range(1, 900) if a != 666])
        return self.unique(lambda: f"{area:03d}-{self.rng.randint(1, 99):02d}-{self.rng.randint(1, 9999):04d}")

    def fill(self, template: str, key: str | None = None) -> tuple[str, list[tuple[str, str]]]:
        """Fill a CONTEXTS-style template. Returns the text and the (entity_type, value) pairs planted;
        a given `key` (a canary) fills {key} and is left out of the pairs (canaries are listed apart)."""
        makers = {"phone": self.phone, "card": self.card, "iban": self.iban, "ssn": self.ssn,
                  "ip": lambda: self.unique(self.fake.ipv4_public), "ip2": lambda: self.unique(self.fake.ipv4_public),
                  "key": lambda: key or self.unique(lambda: "qs_live_" + self.alnum(32)),
                  "akia": lambda: self.unique(lambda: "AKIA" + self.alnum(16, string.ascii_uppercase + string.digits)),
                  "ghp": lambda: self.unique(lambda: "ghp_" + self.alnum(36)),
                  "emp": lambda: self.unique(lambda: f"EMP-{self.rng.randint(100000, 999999)}")}
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        values: dict[str, str] = {}
        for name in fields:
            values[name] = (self.person() if name == "name" else self.email(values.get("name")) if name == "email"
                            else makers[name]())
        planted = [(FIELD_TYPES[f], values[f]) for f in fields if not (f == "key" and key)]
        return template.format(**values), planted


def luhn_check_digit(partial: str) -> str:
    """The digit that makes `partial + digit` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return str((10 - total % 10) % 10)


def sentence_count(text: str) -> int:
    return len(re.findall(r"[.!?](?=\s|$)", text))


def split_fields(line: str) -> list[str]:
    return re.split(r"\s*\|\s*", line.strip())


def parse_kb() -> list[Article]:
    """Parse KB_SOURCE into articles (KB-0001, ...) and their facts."""
    articles: list[Article] = []
    for line in KB_SOURCE.strip().splitlines():
        parts = split_fields(line.lstrip("# "))
        if line.startswith("## "):
            articles.append(Article(f"KB-{len(articles) + 1:04d}", *parts))
        else:
            articles[-1].facts.append(Fact(articles[-1].id, articles[-1].tag, articles[-1].title, *parts))
    return articles


def render_prompt(question: str, rng: random.Random, context: str = "") -> str:
    return " ".join(p for p in (rng.choice(OPENERS), context, question) if p)


def render_answer(answer: str, rng: random.Random, extra: str = "") -> str:
    """Agent reply of 1-4 sentences: optional acknowledgement, the fact, optional extra and closing."""
    parts = [rng.choice(ACKS), answer, extra, rng.choice(CLOSINGS)]
    while sentence_count(" ".join(parts)) > 4 and (parts[0] or parts[3]):
        parts[3 if parts[3] else 0] = ""
    return " ".join(p for p in parts if p)


def build_kb(articles: list[Article], pii: PiiFactory, rng: random.Random) -> list[Record]:
    """KB articles as `# title` markdown text; 10 carry an owner or customer contact note (PII)."""
    noted = set(rng.sample(range(len(articles)), 10))
    records = []
    for i, a in enumerate(articles):
        body = [a.intro] + [f.answer.removeprefix("Yes. ") for f in a.facts]
        note, planted = pii.fill(rng.choice(KB_NOTES)) if i in noted else ("", [])
        body += [note] if note else []
        closings = rng.sample(KB_CLOSINGS, 2)
        while len(" ".join(body).split()) < 60:
            body.append(closings.pop())
        text = " ".join(body)
        assert 3 <= sentence_count(text) <= 8 and len(text.split()) <= 250, (a.id, text)
        records.append(Record({"id": a.id, "title": a.title, "text": f"# {a.title}\n\n{text}"}, planted))
    return records


def build_golden(facts: list[Fact], pii: PiiFactory) -> list[Record]:
    """30 evaluation questions, each answered verbatim by one KB fact (3 carry a customer's name/email), then 15
    more about the other facts of the same articles and 12 the KB does not answer (no randomness: the seeded
    streams stay as they were)."""
    golden = []
    for i, line in enumerate(GOLDEN_SOURCE.strip().splitlines(), start=1):
        phrase, question = split_fields(line)
        (fact,) = [f for f in facts if phrase in f.answer]
        gid = f"G-{i:03d}"
        context, planted = pii.fill(CONTEXTS[0]) if gid in GOLDEN_WITH_PII else ("", [])
        golden.append(Record({"id": gid, "question": f"Hi, {context} {question}" if context else question,
                              "reference_answer": fact.answer, "source_doc_id": fact.article_id, "tags": [fact.tag],
                              "must_include": GOLDEN_FACTS[gid]},
                             planted, {"fact": fact, "plain_question": question}))
    for g in golden:  # the changed fact: the golden answer states the new value, not the old one
        if g.data["id"] in STALE:
            g.data["reference_answer"] = g.data["reference_answer"].replace(*TRIAL_UPDATE)
            g.data["tags"] = [*g.data["tags"], "changed"]
            g.data["must_not_include"] = STALE[g.data["id"]]
    sources = {g.data["source_doc_id"] for g in golden}
    for i, line in enumerate(GOLDEN_EXTRA_SOURCE.strip().splitlines(), start=len(golden) + 1):
        phrase, question, needed = split_fields(line)
        (fact,) = [f for f in facts if phrase in f.answer]
        assert fact.article_id in sources, (phrase, fact.article_id)  # an article already held out for the golden set
        golden.append(Record({"id": f"G-{i:03d}", "question": question, "reference_answer": fact.answer,
                              "source_doc_id": fact.article_id, "tags": [fact.tag],
                              "must_include": [n.strip() for n in needed.split(";")]}))
    golden += [Record({"id": gid, "question": q, "reference_answer": UNANSWERED, "source_doc_id": None,
                       "tags": ["unanswerable"], **({"split": "dev"} if n % 4 == 0 else {})})
               for n, (gid, q) in enumerate(SUPPORT_UNANSWERABLE)]  # a quarter in the dev split: it calibrates
    return golden


def qa_record(question: str, fact: Fact, rng: random.Random, pii: PiiFactory, template: str | None,
              canary: str | None = None) -> Record:
    """One support exchange about `fact`, with PII planted from `template` when given."""
    context, planted = pii.fill(template, key=canary) if template else ("", [])
    emails = [v for t, v in planted if t == "EMAIL_ADDRESS"]
    extra = f"I've also sent these steps to {emails[0]}." if emails and rng.random() < 0.4 else ""
    return Record({"prompt": render_prompt(question, rng, context), "completion": render_answer(fact.answer, rng, extra)},
                  planted, {"canary": canary} if canary else {})


def build_support_qa(facts: list[Fact], golden: list[Record], pii: PiiFactory, rng: random.Random,
                     canary: str) -> list[Record]:
    """One row per fact (PII in ~40%, one canary); the GOLDEN_CONTAMINATED facts are asked with the
    golden question itself (verbatim, and with a "Hi, " prefix) - the contamination to be caught."""
    contaminated = {g.meta["fact"].answer: g for g in golden if g.data["id"] in GOLDEN_CONTAMINATED}
    plain = [f for f in facts if f.answer not in contaminated]
    with_pii = set(rng.sample(range(len(plain)), round(0.4 * len(facts))))
    canary_at = rng.choice([i for i in range(len(plain)) if i not in with_pii])
    templates = [t for _ in range(len(with_pii) // len(CONTEXTS) + 1) for t in rng.sample(CONTEXTS, len(CONTEXTS))]
    rows = []
    for i, fact in enumerate(plain):
        template = templates.pop() if i in with_pii else CANARY_CONTEXT if i == canary_at else None
        rows.append(qa_record(fact.question, fact, rng, pii, template, canary if i == canary_at else None))
    for n, g in enumerate(sorted(contaminated.values(), key=lambda g: g.data["id"])):
        q = g.meta["plain_question"]
        prompt = q if n == 0 else f"Hi, {q[0].lower()}{q[1:]}"
        rows.insert(rng.randrange(len(rows)), Record({"prompt": prompt, "completion": g.data["reference_answer"]},
                                                      meta={"contaminates": g.data["id"]}))
    return rows


def near_duplicate(text: str, kind: str, rng: random.Random) -> str:
    """`text` with a small edit: a letter swap, a synonym, a dropped word or extra whitespace."""
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if re.fullmatch(r"[A-Za-z]{6,}[.,]?", w) and i > len(words) // 3]
    droppable = [i for i, w in enumerate(words) if w in ("the", "a", "and", "your") and i > 2]
    swappable = [i for i, w in enumerate(words) if w in SYNONYMS and i > 1]
    if kind == "synonym" and swappable:
        words[swappable[0]] = SYNONYMS[words[swappable[0]]]
    elif kind == "drop" and droppable:
        del words[rng.choice(droppable)]
    elif kind == "whitespace":  # identical after whitespace normalisation, still a different byte string
        words[long_words[0]] = " " + words[long_words[0]] + " "
    else:  # typo: swap two different adjacent letters
        i = rng.choice(long_words)
        w = words[i]
        j = rng.choice([k for k in range(1, len(w.rstrip(".,")) - 2) if w[k] != w[k + 1]])
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def add_duplicates(rows: list[Record], rng: random.Random) -> list[Record]:
    """Plant 8 exact and 8 near duplicates somewhere after their originals; return 6 further rows
    (untouched so far) to be duplicated across batches in the ticket export."""
    pool = [r for r in rows if not r.meta]  # never copy the canary or contamination rows
    exact = rng.sample(pool, 8)
    longest = sorted((r for r in pool if r not in exact), key=lambda r: -len(" ".join(r.data.values()).split()))
    near = rng.sample(longest[:24], 8)  # long rows, so one edited word keeps Jaccard well above 0.7
    kinds = ["typo", "typo", "synonym", "synonym", "synonym", "drop", "whitespace", "whitespace"]
    copies = [Record(dict(r.data), list(r.pii), {"exact_duplicate_of": r}) for r in exact]
    copies += [Record({"prompt": r.data["prompt"], "completion": near_duplicate(r.data["completion"], kind, rng)},
                      list(r.pii), {"near_duplicate_of": r, "edit": kind}) for r, kind in zip(near, kinds)]
    for copy in copies:
        source = copy.meta.get("exact_duplicate_of") or copy.meta["near_duplicate_of"]
        rows.insert(rng.randint(next(i for i, r in enumerate(rows) if r is source) + 1, len(rows)), copy)
    return rng.sample([r for r in pool if r not in exact and r not in near], 6)


def build_chats(groups: list[list[Fact]], pii: PiiFactory, rng: random.Random, canary: str,
                count: int = 50) -> list[Record]:
    """Chats of 1-3 turns (alternative phrasings); PII in 30% of first user turns; one canary."""
    pii_chats = set(rng.sample(range(count), round(0.3 * count)))
    canary_at = rng.choice([i for i in range(count) if i not in pii_chats])
    records, sizes = [], [len(g) for g in groups]
    for i in range(count):
        turns: list[Fact] = []
        used = [0] * len(groups)  # never cover a whole article, or the chat near-duplicates the KB text
        for _ in range(rng.choice([1, 2, 2, 3])):
            options = [k for k, g in enumerate(groups) if g and used[k] < max(1, sizes[k] - 1)]
            if not (turns and k in options):  # follow-ups switch to another article, on the same topic if possible
                k = rng.choice([o for o in options if turns and groups[o][0].tag == turns[0].tag] or options)
            turns.append(groups[k].pop())
            used[k] += 1
        template = rng.choice(CONTEXTS) if i in pii_chats else CANARY_CONTEXT if i == canary_at else None
        context, planted = pii.fill(template, key=canary if i == canary_at else None) if template else ("", [])
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for n, fact in enumerate(turns):
            user = render_prompt(fact.alt_question, rng, context) if n == 0 else f"{rng.choice(FOLLOWUPS)} {fact.alt_question}"
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": render_answer(fact.answer, rng)}]
        records.append(Record({"id": f"CH-{i + 1:04d}", "messages": messages}, planted,
                              {"canary": canary} if i == canary_at else {}))
    return records


def build_runbooks(canary: str) -> list[Record]:
    """Runbooks with numbered steps; the first one's input quotes a leaked token (a canary)."""
    records = []
    for i, line in enumerate(RUNBOOK_SOURCE.strip().splitlines(), start=1):
        instruction, extra, steps = split_fields(line)
        output = "\n".join(f"{n}. {s.strip()[0].upper()}{s.strip()[1:]}." for n, s in enumerate(steps.split(";"), 1))
        records.append(Record({"id": f"RB-{i:03d}", "instruction": instruction, "input": extra.format(canary=canary),
                               "output": output}, meta={"canary": canary} if "{canary}" in extra else {}))
    return records


def build_staff_questions() -> list[Record]:
    """The internal helpdesk's questions and answers about the policies (no PII, no randomness)."""
    return [Record({"id": f"SQ-{i:03d}", "prompt": q, "completion": a})
            for i, (q, a) in enumerate((split_fields(line) for line in STAFF_QA_SOURCE.strip().splitlines()), start=1)]


def build_policies(pii: PiiFactory) -> list[Record]:
    """Markdown policies; the record id is the file name. security.md names its owner (PII)."""
    records = []
    for name, template in POLICIES.items():
        text, planted = pii.fill(template)
        assert 150 <= len(text.split()) <= 400, (name, len(text.split()))
        records.append(Record({"id": name, "text": text}, planted))
    return records


def build_tickets(facts: list[Fact], dup_sources: list[Record], pii: PiiFactory, rng: random.Random) -> list[Record]:
    """The later ticket batch: new tickets, 6 cross-batch duplicates and deliberately bad lines
    (records whose meta has `raw` are written as those exact bytes)."""
    items = []
    for fact in facts:
        rec = qa_record(fact.alt_question, fact, rng, pii, rng.choice(CONTEXTS) if rng.random() < 0.3 else None)
        rec.data["prompt"] = f"Subject: {fact.title}\n\n{rec.data['prompt']}"
        items.append(rec)
    for n, src in enumerate(dup_sources):
        exact = n < 3
        completion = src.data["completion"] if exact else near_duplicate(src.data["completion"], "typo", rng)
        key = "cross_batch_exact_duplicate_of" if exact else "cross_batch_near_duplicate_of"
        items.append(Record({"prompt": src.data["prompt"], "completion": completion}, list(src.pii), {key: src}))
    log = "".join(f"2026-11-14T02:{i // 60 % 60:02d}:{i % 60:02d}Z WARN delivery {i} to endpoint wh_{i % 7} failed: "
                  f"status=502 attempt={i % 8 + 1} latency_ms={rng.randint(9000, 10000)}\n" for i in range(900))
    assert len(log) > 60_000
    items += [Record({"prompt": "Webhook deliveries keep failing. Full delivery log from last night below.",
                      "completion": log}, meta={"bad": "oversized_record"}),
              Record({"prompt": "", "completion": ""}, meta={"bad": "empty_record"}),
              Record({"id": "TK-BAD", "foo": "bar"}, meta={"bad": "unrecognised_schema"})]
    rng.shuffle(items)
    raw_lines = [(5, b'{"id": "TK-MALFORMED", "prompt": "How do I export all boards to CSV at once?", "completion": "Ope',
                  "malformed_json"),
                 (17, b'{"id": "TK-BADUTF8", "prompt": "Invoice PDF shows \xff\xfe garbage", "completion": "Re-download it."}',
                  "invalid_utf8"),
                 (11, b"", "blank_line"), (29, b"", "blank_line")]
    for pos, raw, reason in raw_lines:
        items.insert(pos, Record({}, meta={"raw": raw, "bad": reason}))
    return items


def build_junk() -> list[Record]:
    """Records a quality filter must drop (reason in the id), and `fixable` ones it must keep after cleaning."""
    texts = dict(JUNK)
    for key in [k for k in texts if k.startswith("fixable-mojibake")]:
        texts[key] = texts[key].encode("utf-8").decode("cp1252")  # UTF-8 read as cp1252: classic mojibake
    return [Record({"id": f"JUNK-{k}", "text": v}) for k, v in texts.items()]


def assign_ids(records: list[Record], prefix: str, width: int, start: int = 1) -> None:
    """Give records without an id the next `prefix` number, in file order (id as the first key)."""
    n = start
    for r in records:
        if "id" not in r.data and "raw" not in r.meta:
            r.data = {"id": f"{prefix}{n:0{width}d}", **r.data}
            n += 1


def build_corpus(seed: int) -> Corpus:
    """Build every record. The order of calls is part of the output: it fixes the seeded streams."""
    rng, fake = random.Random(seed), Faker("en_US")
    fake.seed_instance(seed)
    pii = PiiFactory(fake, rng)
    articles = parse_kb()
    facts = [f for a in articles for f in a.facts]
    canaries = [pii.unique(lambda: "qs_live_CANARY" + pii.alnum(26)) for _ in range(3)]

    kb = build_kb(articles, pii, rng)
    golden = build_golden(facts, pii)
    golden_facts = [g.meta["fact"] for g in golden if "fact" in g.meta]
    qa_facts = golden_facts + rng.sample([f for f in facts if f not in golden_facts], 144 - len(golden_facts))
    rng.shuffle(qa_facts)
    qa = build_support_qa(qa_facts, golden, pii, rng, canaries[0])
    cross_batch_sources = add_duplicates(qa, rng)
    assign_ids(qa, "QA-", 4)

    alt_pool = rng.sample(facts, len(facts))  # alternative phrasings: 27 for tickets, the rest for chats
    groups = [[f for f in alt_pool[27:] if f.article_id == a.id] for a in articles]
    chats = build_chats(groups, pii, rng, canaries[1])
    runbooks = build_runbooks(canaries[2])
    policies = build_policies(pii)
    tickets = build_tickets(alt_pool[:27], cross_batch_sources, pii, rng)
    assign_ids(tickets, "TK-", 5, start=48201)
    binary = bytearray(rng.randbytes(2048))
    for pos in (0, 3, 100, 1000, 2047):
        binary[pos] = 0
    policy_golden = [Record({"id": gid, "question": q, "reference_answer": a, "source_doc_id": src, "tags": ["policy"],
                             "must_include": needed}) for gid, q, a, src, needed in POLICY_GOLDEN]
    policy_golden += [Record({"id": gid, "question": q, "reference_answer": a, "source_doc_id": src,
                              "tags": ["document"] + (["changed"] if gid in STALE else []), "must_include": needed,
                              **({"must_not_include": STALE[gid]} if gid in STALE else {})})
                      for gid, q, a, src, needed in HANDBOOK_GOLDEN]
    policy_golden += [Record({"id": gid, "question": q, "reference_answer": UNANSWERED, "source_doc_id": None,
                              "tags": ["unanswerable"], **({"split": "dev"} if n % 4 == 0 else {})})
                      for n, (gid, q) in enumerate(UNANSWERABLE_GOLDEN + POLICY_UNANSWERABLE)]
    return Corpus(kb, qa, chats, runbooks, policies, tickets, build_junk(), golden, bytes(binary), policy_golden,
                  build_staff_questions())


def documents_golden() -> list[Record]:
    """The knowledge benchmark's golden set: every fact of the policy model's documents, and questions they leave
    unanswered."""
    rows = [Record({"id": gid, "question": q, "reference_answer": a, "source_doc_id": None, "tags": ["document"],
                    "must_include": facts}) for gid, q, a, facts in KNOWLEDGE_GOLDEN]
    return rows + [Record({"id": gid, "question": q, "reference_answer": UNANSWERED, "source_doc_id": None,
                           "tags": ["document", "unanswerable"]}) for gid, q in UNANSWERABLE_GOLDEN]


def write_jsonl(path: Path, records: list[Record]) -> None:
    with path.open("wb") as fh:
        for r in records:
            fh.write(r.meta["raw"] if "raw" in r.meta else json.dumps(r.data, ensure_ascii=False).encode("utf-8"))
            fh.write(b"\n")


def write_json(path: Path, payload) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_inboxes(corpus: Corpus, out: Path) -> None:
    """Each model's inbox: support/inbox (support data), policy/inbox (runbooks and policies)."""
    inbox, policy = out / "support" / "inbox", out / "policy" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (policy / "policies").mkdir(parents=True, exist_ok=True)
    write_jsonl(inbox / "kb_articles.jsonl", corpus.kb)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["id", "prompt", "completion"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.data for r in corpus.qa)
    (inbox / "support_qa.csv").write_text(buf.getvalue(), encoding="utf-8")
    write_jsonl(inbox / "chat_transcripts.jsonl", corpus.chats)
    write_json(policy / "runbooks.json", [r.data for r in corpus.runbooks])
    for r in corpus.policies:
        (policy / "policies" / r.data["id"]).write_text(r.data["text"], encoding="utf-8")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["id", "prompt", "completion"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.data for r in corpus.staff)
    (policy / "staff_questions.csv").write_text(buf.getvalue(), encoding="utf-8")
    write_jsonl(inbox / "ticket_export_2026_11.jsonl", corpus.tickets)
    write_jsonl(inbox / "updates_2026_12.jsonl", updates(corpus))
    write_jsonl(inbox / "junk.jsonl", corpus.junk)
    (inbox / "attachment.bin").write_bytes(corpus.binary)
    for rel, data in documents().items():  # documents with no question/answer shape (DOCX, PDF, a long manual)
        (policy / rel).parent.mkdir(parents=True, exist_ok=True)
        (policy / rel).write_bytes(data)


def updates(corpus: Corpus) -> list[Record]:
    """The later batch of changed records: the trial article and the Q&A row that states its length, now 30 days
    (the same ids: new versions that supersede the first)."""
    old, new = TRIAL_UPDATE
    changed = [r for r in corpus.kb if old in r.data["text"]] + [r for r in corpus.qa if old in r.data.get("completion", "")]
    return [Record({k: v.replace(old, new) if isinstance(v, str) else v for k, v in r.data.items()}) for r in changed]


def canary_rows(corpus: Corpus) -> list[dict]:
    return [{"value": r.meta["canary"], "record_id": r.data["id"], "file": file}
            for file, records in corpus.files().items() for r in records if "canary" in r.meta]


def pii_manifest(corpus: Corpus) -> list[dict]:
    """One row per planted value per record, canaries included (as API_KEY)."""
    rows = [{"file": file, "record_id": r.data["id"], "entity_type": t, "value": v}
            for file, records in corpus.files().items() for r in records for t, v in dict.fromkeys(r.pii)]
    return rows + [{"file": c["file"], "record_id": c["record_id"], "entity_type": "API_KEY", "value": c["value"]}
                   for c in canary_rows(corpus)]


def planted_summary(corpus: Corpus, seed: int) -> dict:
    """What the pipeline is expected to find, by record id (written as planted.json)."""
    def copies(records, *keys):
        return {r.data["id"]: r.meta[k].data["id"] for r in records for k in keys if k in r.meta}
    return {
        "seed": seed,
        "exact_duplicates": copies(corpus.qa, "exact_duplicate_of"),
        "near_duplicates": {k: f"{v} ({next(r.meta['edit'] for r in corpus.qa if r.data['id'] == k)})"
                            for k, v in copies(corpus.qa, "near_duplicate_of").items()},
        "cross_batch_duplicates": copies(corpus.tickets, "cross_batch_exact_duplicate_of", "cross_batch_near_duplicate_of"),
        "bad_lines": {str(n): r.meta["bad"] for n, r in enumerate(corpus.tickets, 1) if "bad" in r.meta},
        "contamination": {r.meta["contaminates"]: r.data["id"] for r in corpus.qa if "contaminates" in r.meta},
        "canaries": {c["value"]: f"{c['file']}#{c['record_id']}" for c in canary_rows(corpus)},
        "junk_ids": [r.data["id"] for r in corpus.junk],
    }


def write_readme(out: Path, corpus: Corpus, planted: dict, manifest_size: int) -> None:
    def pairs(d: dict) -> str:
        return ", ".join(f"{k} -> {v}" for k, v in d.items())
    counts = [("support/inbox/kb_articles.jsonl", len(corpus.kb), "knowledge-base articles `{id, title, text}`"),
              ("support/inbox/support_qa.csv", len(corpus.qa), "support Q&A, header `id,prompt,completion`"),
              ("support/inbox/chat_transcripts.jsonl", len(corpus.chats), "chat transcripts `{id, messages}`"),
              ("support/inbox/ticket_export_2026_11.jsonl", len(corpus.tickets), "later ticket batch; lines, bad and blank included"),
              ("support/inbox/junk.jsonl", len(corpus.junk), "`{id, text}` records for the quality filter"),
              ("support/inbox/updates_2026_12.jsonl", len(updates(corpus)), "a later batch: new versions of KB-0002 and the "
               "Q&A row repeating it (the trial is now 30 days, not 14): they supersede the first versions"),
              ("support/inbox/attachment.bin", 1, "2 KB of random bytes with NULs: must be quarantined"),
              ("support/golden.jsonl", len(corpus.golden), "the support assistant's evaluation set `{id, question, reference_answer, "
               "source_doc_id, tags, must_include, must_not_include?, split?}`: questions about 28 KB articles (held out of "
               "training whole), and questions the KB does not answer (tag `unanswerable`)"),
              ("support/feedback/reviews_2026_11.csv", 6, "reviewer labels on support answers (written by hand, not generated)"),
              ("policy/inbox/runbooks.json", len(corpus.runbooks), "JSON array of runbooks `{id, instruction, input, output}`"),
              ("policy/inbox/policies/", len(corpus.policies), "folder batch of markdown policies"),
              ("policy/inbox/staff_questions.csv", len(corpus.staff), "the internal helpdesk's Q&A about the policies, header `id,prompt,completion`"),
              ("policy/inbox/updates_2026_12/", 1, "a later batch: the employee handbook's revision (parental leave 26 "
               "weeks, not 20), which supersedes the first"),
              ("policy/golden.jsonl", len(corpus.policy_golden), "the policy assistant's evaluation set: the policies, the handbook, "
               "the services agreement and six runbooks (each held out of training whole), and unanswerable questions"),
              ("policy/golden_documents.jsonl", len(documents_golden()), "every fact of `handbooks/` and `policies/` "
               "asked in people's words, with `must_include`, and questions they do not answer (tag `unanswerable`): "
               "the knowledge benchmark's golden set"),
              ("pii_manifest.jsonl", manifest_size, "one line per planted PII value `{file, record_id, entity_type, value}`"),
              ("canaries.json", len(planted["canaries"]), "canary secrets"),
              ("planted.json", 1, "machine-readable list of everything planted")]
    lines = [
        "# Quillstack sample corpus", "",
        f"Generated by `scripts/generate_sample_corpus.py --seed {planted['seed']}` (stdlib + Faker; re-running it gives"
        " byte-identical files). Quillstack is a fictional B2B project-management SaaS: every fact is stated once in the KB,"
        " and Q&A, chats, tickets and golden answers are rendered from the same facts. All personal data is synthetic.", "",
        "It is the data of the two sample models (`models/support`, `models/policy`): the customer-support assistant learns"
        " from `support/inbox/`, the internal policy and runbook assistant from `policy/inbox/`.", "",
        "| path | records | what |", "|---|---|---|", *[f"| `{p}` | {n} | {w} |" for p, n, w in counts], "",
        "## Planted", "",
        f"- **PII**: {manifest_size} values (PERSON, EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD incl. Mastercard 2-series, IBAN_CODE,"
        " IP_ADDRESS, US_SSN, API_KEY, EMPLOYEE_ID) in ~40% of Q&A rows, ~30% of chats, 10 KB articles, some tickets,"
        " security.md and 3 golden questions. A policy's record_id is its file name.",
        f"- **Exact duplicates** (support_qa copy -> original): {pairs(planted['exact_duplicates'])}",
        f"- **Near duplicates** (copy -> original (edit)): {pairs(planted['near_duplicates'])};"
        " `whitespace` copies are identical once whitespace is normalised.",
        f"- **Cross-batch duplicates** (ticket -> support_qa row): {pairs(planted['cross_batch_duplicates'])}",
        f"- **Bad lines** in the ticket export (line -> expected reason): {pairs(planted['bad_lines'])}",
        "- **Junk**: the intended drop reason is in each `JUNK-*` id; `JUNK-fixable-*` (mojibake, control characters,"
        " e-mail boilerplate) must be kept after cleaning.",
        f"- **Golden contamination** (golden id -> support_qa row to drop): {pairs(planted['contamination'])}",
        f"- **Canaries** (never to appear in a trained model's output): {pairs(planted['canaries'])}", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def generate(out: Path, seed: int) -> None:
    corpus = build_corpus(seed)
    write_inboxes(corpus, out)
    write_jsonl(out / "support" / "golden.jsonl", corpus.golden)
    write_jsonl(out / "policy" / "golden.jsonl", corpus.policy_golden)
    write_jsonl(out / "policy" / "golden_documents.jsonl", documents_golden())
    manifest = pii_manifest(corpus)
    write_jsonl(out / "pii_manifest.jsonl", [Record(m) for m in manifest])
    write_json(out / "canaries.json", {"canaries": canary_rows(corpus)})
    planted = planted_summary(corpus, seed)
    write_json(out / "planted.json", planted)
    write_readme(out, corpus, planted, len(manifest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "sample", help="output folder")
    parser.add_argument("--seed", type=int, default=SEED, help="seed for Faker and random.Random")
    args = parser.parse_args()
    generate(args.out, args.seed)
    print(f"wrote the sample corpus to {args.out}")


if __name__ == "__main__":
    main()

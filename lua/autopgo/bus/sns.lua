-- AWS SNS event writer (query protocol over autopgo.http, SigV4), with gocloud.dev's URLs:
--   awssns:///arn:aws:sns:us-east-2:123456789012:my-topic?region=us-east-2
-- The ARN is the URL's host and path. The region comes from region=, else the ARN, else the AWS
-- configuration; requests go to endpoint=, AWS_ENDPOINT_URL_SNS or AWS_ENDPOINT_URL when set, else
-- https://sns.<region>.amazonaws.com. On a FIFO topic (.fifo) the app is the MessageGroupId and
-- the envelope id the MessageDeduplicationId; the app also goes as the message attribute
-- autopgo-key. SNS is write-only here: workers read an SQS queue subscribed to the topic
-- (awssqs://..., raw delivery recommended; non-raw notifications are unwrapped).
local fail = require "autopgo.fail"
local url = require "autopgo.url"
local rest = require "autopgo.rest"
local awsquery = require "autopgo.bus.awsquery"
local base = require "autopgo.bus.base"

local M = {}

M.VERSION = "2010-03-31"

local Writer = base.writer_class()

function Writer:send(body, opts)
  local params = awsquery.message_params({ target = { "TopicArn", self.arn }, body = "Message",
    attribute = "MessageAttributes.entry.%d" }, self.fifo, body, opts)
  return self.client:call("Publish", params)
end

function Writer:probe()
  return self.client:call("GetTopicAttributes", { { "TopicArn", self.arn } }, { deadline = 10 })
end

function M.writer(u, opts)
  local q = {}
  for k, v in pairs(u.query) do q[k] = v end
  local ok, err, code = rest.check_params("awssns", q, awsquery.URL_OPTIONS)
  if not ok then return nil, err, code end
  local arn = url.unescape((u.host or "") .. (u.port and (":" .. u.port) or "") .. (u.path or "")):gsub("^/+", "")
  local region_of_arn = arn:match("^arn:[^:]+:sns:([^:]+):")
  if not region_of_arn then
    return fail.new("INVALID", "%s: want awssns:///arn:aws:sns:<region>:<account>:<topic>", u.raw)
  end
  if not q.region or q.region == "" then q.region = region_of_arn end
  local o
  o, err, code = awsquery.options(q, opts, "AWS_ENDPOINT_URL_SNS")
  if not o then return nil, err, code end
  local client
  client, err, code = awsquery.new {
    service = "sns", version = M.VERSION, region = o.region, creds = o.creds,
    endpoint = o.endpoint or awsquery.default_endpoint("sns", o.region, o.scheme, o.flags),
    name = "awssns:///" .. arn, insecure = opts.insecure, ca_file = opts.ca_file,
    anonymous = o.flags.anonymous,
  }
  if not client then return nil, err, code end
  return base.new_writer(Writer, "awssns",
    { name = client.name, arn = arn, fifo = arn:match("%.fifo$") ~= nil, client = client })
end

return M

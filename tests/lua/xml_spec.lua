-- Specs for lua/autopgo/xml.lua: real response shapes from S3, STS and Azure Blob, entities,
-- CDATA, skipped markup and malformed documents.
local xml = require "autopgo.xml"

describe("xml", function()
  it("reads an S3 ListObjectsV2 result", function()
    local doc = assert(xml.parse([[<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>app/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents><Key>app/a&amp;b.pgo</Key><LastModified>2015-08-30T12:36:00.000Z</LastModified>
    <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>434234</Size></Contents>
  <Contents><Key>app/staging/1</Key><Size>0</Size></Contents>
</ListBucketResult>]]))
    assert.equals("ListBucketResult", doc.tag)
    assert.equals("http://s3.amazonaws.com/doc/2006-03-01/", doc.attrs.xmlns)
    assert.equals("true", xml.find_text(doc, "IsTruncated"))
    assert.equals("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=", xml.find_text(doc, "NextContinuationToken"))
    local contents = xml.children(doc, "Contents")
    assert.equals(2, #contents)
    assert.equals("app/a&b.pgo", xml.find_text(contents[1], "Key"))
    assert.equals('"fba9dede5f27731c9771645a39863328"', xml.find_text(contents[1], "ETag"))
    assert.equals("0", xml.find_text(contents[2], "Size"))
    assert.is_nil(xml.find(contents[2], "ETag"))
  end)

  it("reads an STS response with a namespace prefix and an S3 error", function()
    local sts = assert(xml.parse([[<sts:AssumeRoleWithWebIdentityResponse
  xmlns:sts="https://sts.amazonaws.com/doc/2011-06-15/">
<sts:AssumeRoleWithWebIdentityResult><sts:Credentials><sts:AccessKeyId>ASIA1</sts:AccessKeyId>
<sts:Expiration>2019-11-09T13:34:41Z</sts:Expiration></sts:Credentials></sts:AssumeRoleWithWebIdentityResult>
</sts:AssumeRoleWithWebIdentityResponse>]]))
    assert.equals("ASIA1", xml.find_text(sts, "AssumeRoleWithWebIdentityResult/Credentials/AccessKeyId"))
    local err = assert(xml.parse(
      "<Error><Code>NoSuchKey</Code><Message>The resource you requested does not exist</Message></Error>"))
    assert.equals("NoSuchKey", xml.find_text(err, "Code"))
  end)

  it("handles character references, CDATA, comments and a DOCTYPE", function()
    local doc = assert(xml.parse([==[<!DOCTYPE x [ <!ENTITY e "boom"> ]><!-- c -->
<x a='1' b="&lt;&#65;&#x42;&#x1F600;"><![CDATA[<raw & text>]]><y/><!-- inner --><z k="v" /></x>]==]))
    assert.equals("1", doc.attrs.a)
    assert.equals("<AB\u{1F600}", doc.attrs.b)
    assert.equals("<raw & text>", xml.text(doc))
    assert.equals(2, #xml.children(doc))
    assert.equals("v", xml.child(doc, "z").attrs.k)
  end)

  it("rejects malformed documents with INVALID", function()
    for _, bad in ipairs {
      "", "just text", "<a>", "<a></b>", "<a><b></a></b>", "<a x=1/>", "<a>&bogus;</a>",
      "<a/><b/>", "<a><!-- open</a>", "<a><![CDATA[x</a>", "</a>", "<a x='1'y='2'/>",
    } do
      local doc, err, code = xml.parse(bad)
      assert.is_nil(doc, bad)
      assert.equals("INVALID", code, bad)
      assert.matches("^INVALID: XML ", err)
    end
  end)

  it("escapes text that round-trips", function()
    local s = [[a<b>&"c"'d']]
    local doc = assert(xml.parse("<k v='" .. xml.escape(s) .. "'>" .. xml.escape(s) .. "</k>"))
    assert.equals(s, doc.attrs.v)
    assert.equals(s, xml.text(doc))
  end)
end)

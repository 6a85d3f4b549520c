"""The provider adapter: the only package that imports ``twilio``.

- :mod:`telephony.signature`: X-Twilio-Signature checks and the provider-facing blueprint factory.
- :mod:`telephony.twiml`: TwiML documents built with the official library.
- :mod:`telephony.client`: outbound REST (redirect a live call, …) behind a small protocol,
  with the Twilio implementation and an in-memory fake.
"""

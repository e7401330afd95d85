"""factory_boy factories shared by the tests."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from apps.registry.models import ModelFamily
from gatehouse.roles import Role

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def roles(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create and extracted:
            for role in extracted:
                self.groups.add(Group.objects.get_or_create(name=Role(role).value)[0])
        if create:
            self.save()


class ModelFamilyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelFamily
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"family-{n}")
    name = factory.LazyAttribute(lambda f: f.slug.replace("-", " ").title())
    owner = factory.SubFactory(UserFactory)
